"""Output formats of `docsam segment`, one module each, every file written atomically.

- `page_outputs`: `PageWriter`, everything one page writes (and the run-level files), `FORMATS`
- `coco`: `CocoRun` (per-page parts → one dataset JSON + a results list for the run)
- `page_xml`: `page_xml_string` / `write_page_xml` (PAGE 2019-07-15), class mapping in `page_map`
- `overlay`: `render_overlay` / `write_overlay`
- `jsonl`: `page_record` / `error_record` / `dumps_record`
Shared: `shapes` (one page's masks decoded and traced once, for every writer), `layout` (regions, lines
and reading order), `class_map` (`--page-map` specs), `boxes` (clipping
model boxes), `reading_order`; masks become polygons in `docsam_cli.polygons`.
"""
