"""Output formats of `docsam segment`, one module each, every file written atomically.

- `coco`: `CocoRun` (per-page parts → one dataset JSON + a results list for the run)
- `page_xml`: `page_xml_string` / `write_page_xml` (PAGE 2019-07-15), class mapping in `page_map`
- `overlay`: `render_overlay` / `write_overlay`
- `jsonl`: `page_record` / `error_record` / `dumps_record`
Shared geometry: `polygons` (mask → polygons), `boxes` (clipping model boxes), `reading_order`.
"""
