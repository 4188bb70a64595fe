"""Datasets: read annotation formats (`convert/`), clean their geometry, write and read the unified layout.

The unified layout is the reference's per-split folder: `list.txt`, `image/`, one COCO json per image in
`coco/<stem>.json`, `class_name/<stem>.txt`. `convert-dataset` writes it, the trainer and `evaluate` read
it. Every JSON field read is checked through `fields.JsonField` (COCO files through `coco_json`), and every
image is looked up by `images.ImageFinder`.
"""
