"""`docsam train` / `docsam finetune`: the reference's training, reproducible, resumable and multi-process.

Modules, in the order data flows:

* `settings` — every setting of a run, declared once (defaults, help); `command_line` — the two commands'
  options derived from it, and `--config` replay of a recorded run.
* `datasets` — one unified-layout split on disk; `annotations` — the reference loader's COCO rules.
* `augment` — random size (or the keep-size rule), 640 crops or the 20 % whole resize, 4-px box filter,
  rasterisation.
* `data` — several datasets mixed with the reference's sampling probabilities (or weights, or a
  curriculum), collation; `sampler` / `sample_random` — which sample each process loads, and its seed.
* `build` — the starting network (Mask2Former + MiniLM, scratch, a DocSAM checkpoint).
* `trainer` — the loop (AdamW, schedules, accumulation, autocast, DDP over `docsam_cli.distributed`'s
  process group); `checkpoints`, `run_log`, `progress`, `validation` — what it writes, shows, measures.
* `launch` — one run from its parts (what the two commands call).

Nothing is imported here: the commands import `settings` and `command_line` without loading torch.
"""
