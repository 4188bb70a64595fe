"""Datasets: read annotation formats (`convert/`), clean their geometry, write and read the unified layout.

The unified layout is the reference's per-split folder (ARCHITECTURE.md §6.1): `list.txt`, `image/`,
one COCO json per image in `coco/<stem>.json`, `class_name/<stem>.txt`. `convert-dataset` writes it, the
trainer and `evaluate` read it.
"""
