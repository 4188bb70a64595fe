"""`docsam train` / `docsam finetune`: the reference's training (ARCHITECTURE.md §4–§6, §9), reproducible,
resumable and multi-process.

Modules, in the order data flows:

* `datasets` — one unified-layout split on disk; `annotations` — the reference loader's COCO rules.
* `augment` — random short side, 640 crops or the 20 % whole resize, 4-px box filter, rasterisation.
* `data` — several datasets mixed with the reference's sampling probabilities (or weights, or a
  curriculum), collation; `sampler` / `sample_random` — which sample each process loads, and its seed.
* `build` — the starting network (Mask2Former + MiniLM, scratch, a DocSAM checkpoint) and dropout rates.
* `trainer` — the loop (AdamW, schedules, accumulation, autocast, DDP); `checkpoints`, `run_log`,
  `progress`, `validation`, `distributed` — what it writes, shows, measures and how it talks to peers.
* `launch` — one run from its parts (what the two commands call).
"""

from docsam_cli.training.augment import AugmentSettings
from docsam_cli.training.build import Regularisation
from docsam_cli.training.datasets import DatasetSpec, LayoutDataset
from docsam_cli.training.launch import RunPlan, run
from docsam_cli.training.trainer import Trainer, TrainingOptions

__all__ = [
    "AugmentSettings",
    "DatasetSpec",
    "LayoutDataset",
    "Regularisation",
    "RunPlan",
    "Trainer",
    "TrainingOptions",
    "run",
]
