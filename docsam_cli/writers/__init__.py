"""Output formats of `docsam segment`, one module each, every file written atomically.

- `page_outputs`: `PageWriter`, everything one page writes (and the run-level files)
- `formats`: `FORMATS` and the mask formats, named without importing any writer (for the command line)
- `coco`: `CocoRun` (per-page parts → one dataset JSON + a results list for the run)
- `page_xml`: `page_xml_string` / `write_page_xml` (PAGE 2019-07-15), class mapping in `page_map`
- `alto`: `alto_string` / `write_alto` (ALTO 4.4), class mapping in `alto_map`
- `overlay`: `render_overlay` / `write_overlay`
- `semantic`: `label_map` / `write_label_map` (class-number PNGs) and the run's class table
- `jsonl`: `page_record` / `error_record` / `dumps_record`
Shared: `shapes` (one page's masks decoded and traced once, for every writer), `layout` (regions, lines
and reading order for PAGE and ALTO), `class_map` (`--page-map` / `--alto-map` specs), `boxes` (clipping
model boxes), `reading_order`; masks become polygons in `docsam_cli.polygons`.
"""
