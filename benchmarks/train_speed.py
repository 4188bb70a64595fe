"""Training iterations per second and peak memory of DocSAM on random crops (forward, 33-term loss,
backward, AdamW step), as `docsam train` runs them.

    python benchmarks/train_speed.py --variant large --precision bf16 --batch-size 4 --device cuda
    python benchmarks/train_speed.py --config tiny-config.json --size 128 --iters 3 --device cpu  # smoke

Random weights and random pixels; every image gets `--instances` random rectangles over 5 classes (the
matcher and mask losses scale with them). Dropout as in training. The first `--warmup` steps (CUDA kernel
selection, allocator growth) are not timed. Peak memory is `torch.cuda.max_memory_allocated` on CUDA and the
process's peak resident size on the CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import positive_int
from docsam_cli.errors import UsageError
from docsam_cli.precision import PRECISIONS, precision_dtype
from docsam_cli.runtime import fit_threads_to_cpus, keep_freed_memory, pick_device
from docsam_cli.training.data import TrainingBatch
from docsam_cli.training.settings import Regularisation
from docsam_cli.training.trainer import forward_loss, trainable_parameters
from model.config import VARIANTS, DocSAMConfig, variant_config
from model.docsam import DocSAM
from model.init import initialise
from model.loss import DocSAMCriterion, ImageTargets
from model.optim import build_optimizer

CLASSES = ["figure", "list", "table", "text", "title", "Benchmark _background_"]


def random_batch(batch: int, size: int, instances: int, generator: torch.Generator) -> TrainingBatch:
    targets = []
    for _ in range(batch):
        corners = torch.randint(0, size, (instances, 2, 2), generator=generator).sort(dim=1).values
        boxes = torch.cat([corners[:, 0], corners[:, 1] + 4], dim=1).clamp(max=size).float()
        masks = torch.zeros(instances, size, size, dtype=torch.bool)
        for index, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            masks[index, y1:y2, x1:x2] = True
        labels = torch.randint(0, len(CLASSES) - 1, (instances,), generator=generator)
        semantic = torch.zeros(len(CLASSES), size, size, dtype=torch.bool)
        for label in range(len(CLASSES) - 1):
            semantic[label] = masks[labels == label].any(0)
        semantic[-1] = ~masks.any(0)
        targets.append(ImageTargets(masks, boxes, labels, semantic, CLASSES))
    return TrainingBatch(
        pixel_values=torch.rand(batch, 3, size, size, generator=generator) * 255,
        pixel_mask=torch.ones(batch, 1, size, size),
        image_bboxes=torch.tensor([[0, 0, size, size]] * batch),
        targets=targets,
        sources=["random"] * batch,
    )


def peak_memory_gib(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "peak GPU memory (max_memory_allocated)", torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return "peak process memory (max RSS)", peak / (2**30 if sys.platform == "darwin" else 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="large", choices=list(VARIANTS))
    parser.add_argument("--config", help="model config JSON instead of --variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--size", type=int, default=640, help="square crop side")
    parser.add_argument("--instances", type=int, default=20, help="GT instances per image")
    parser.add_argument("--iters", type=positive_int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    args = parser.parse_args()

    keep_freed_memory()  # the process set up as `docsam train` sets up its own
    fit_threads_to_cpus()
    torch.manual_seed(0)
    try:  # no such device, or fp16 off CUDA: one line before building the model, no traceback
        device = pick_device(args.device)
        precision_dtype(args.precision, device)
    except (UsageError, ValueError) as error:
        parser.error(str(error))
    config = DocSAMConfig.from_json(args.config) if args.config else variant_config(args.variant)
    model = DocSAM(Regularisation().apply(config))
    initialise(model)  # random weights: the speed does not depend on them
    model.to(device).train()
    optimizer = build_optimizer(
        trainable_parameters(model, freeze_backbone=False), lr=1e-5, weight_decay=1e-2
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    criterion = DocSAMCriterion(model.config)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(args.batch_size, args.size, args.instances, generator).to(device)

    def step() -> None:
        _, losses = forward_loss(model, batch, criterion, args.precision)
        scaler.scale(losses.total).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    name = args.config or f"DocSAM-{args.variant}"
    print(
        f"{name} on {device} ({args.precision}), batch {args.batch_size} of {args.size}x{args.size}: "
        f"{args.iters / elapsed:.3f} it/s ({args.batch_size * args.iters / elapsed:.2f} images/s)"
    )
    label, gib = peak_memory_gib(device)
    print(f"{label}: {gib:.2f} GiB")


if __name__ == "__main__":
    main()
