"""How closely bf16 autocast reproduces float32, end to end, on real pages.

Every page is segmented twice (the network in float32, then under bfloat16 autocast; post-processing is
float32 either way) and the two results are compared: instance counts, instances matched one to one by
mask IoU (Hungarian assignment), the IoU of each matched pair, whether matched pairs agree on the label,
and the IoU of the semantic maps per class. Runs on any device:

    python -m benchmarks.precision_agreement --variant large --device cuda --pages 20
    python -m benchmarks.precision_agreement --model-config ../shared/fixtures/reference/tiny-config.json \\
        --device cpu --pages 2

Pages come from --pages-dir, by default `fixtures-local/pages` when it exists, else `../shared/data/pages`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from benchmarks.common import (
    add_model_arguments,
    build_model,
    check_precision,
    folder_pages,
    model_label,
    positive_int,
    segment,
)
from model.instances import PageInstances

DEFAULT_PAGE_DIRS = (Path("fixtures-local/pages"), Path("../shared/data/pages"))


@dataclass
class PageAgreement:
    reference_count: int  # float32 instances
    other_count: int  # bf16 instances
    matched_iou: list[float]  # one per matched pair
    labels_agree: int  # matched pairs with the same label
    semantic_iou: list[float]  # per class (1.0 when both maps are empty)


def compare(reference: PageInstances, other: PageInstances) -> PageAgreement:
    """Match `other`'s instances to `reference`'s by mask IoU (maximum total IoU, pairs with IoU 0 left
    unmatched)."""
    matched, agree = [], 0
    if len(reference) and len(other):
        ious = np.asarray(mask_utils.iou(other.masks, reference.masks, [0] * len(reference.masks)))
        rows, cols = linear_sum_assignment(-ious)
        for row, col in zip(rows, cols, strict=True):
            if ious[row, col] > 0:
                matched.append(float(ious[row, col]))
                agree += int(other.labels[row] == reference.labels[col])
    semantic = []
    for first, second in zip(reference.semantic_masks, other.semantic_masks, strict=True):
        union = mask_utils.area(mask_utils.merge([first, second], intersect=False))
        inter = mask_utils.area(mask_utils.merge([first, second], intersect=True))
        semantic.append(float(inter / union) if union else 1.0)
    return PageAgreement(len(reference), len(other), matched, agree, semantic)


def summary(pages: list[PageAgreement]) -> dict[str, float]:
    ious = np.array([iou for page in pages for iou in page.matched_iou])
    reference_total = sum(page.reference_count for page in pages)
    matched = len(ious)
    return {
        "pages": len(pages),
        "instances_fp32": reference_total,
        "instances_bf16": sum(page.other_count for page in pages),
        "pages_with_equal_counts": sum(page.reference_count == page.other_count for page in pages),
        "matched": matched,
        "matched_share_of_fp32": matched / reference_total if reference_total else 1.0,
        "mask_iou_mean": float(ious.mean()) if matched else float("nan"),
        "mask_iou_median": float(np.median(ious)) if matched else float("nan"),
        "mask_iou_min": float(ious.min()) if matched else float("nan"),
        "share_iou_at_least_0.9": float((ious >= 0.9).mean()) if matched else float("nan"),
        "share_iou_at_least_0.5": float((ious >= 0.5).mean()) if matched else float("nan"),
        "labels_agree": sum(page.labels_agree for page in pages) / matched if matched else float("nan"),
        "semantic_iou_mean": float(np.mean([iou for page in pages for iou in page.semantic_iou])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--pages-dir", type=Path, help="folder of page images/PDFs")
    parser.add_argument("--pages", type=positive_int, default=20, help="at most this many pages")
    parser.add_argument("--other", default="bf16", choices=["bf16", "fp16"], help="precision against fp32")
    parser.add_argument("--json", type=Path, help="append the summary as one JSON line to this file")
    args = parser.parse_args()

    folder = args.pages_dir or next((path for path in DEFAULT_PAGE_DIRS if path.is_dir()), None)
    if folder is None:
        raise SystemExit("no pages: pass --pages-dir")
    pages = folder_pages(folder, args.pages)
    if not pages:
        raise SystemExit(f"no readable pages in {folder}")
    model, device = build_model(args)
    float32, other = check_precision("fp32", device), check_precision(args.other, device)
    results = []
    for index, page in enumerate(pages):
        (reference,) = segment(model, [page], device, float32)
        (candidate,) = segment(model, [page], device, other)
        results.append(compare(reference, candidate))
        agreement = results[-1]
        mean_iou = np.mean(agreement.matched_iou) if agreement.matched_iou else float("nan")
        print(
            f"page {index:3d} {page.shape[1]}x{page.shape[0]}: instances fp32 {agreement.reference_count}, "
            f"{args.other} {agreement.other_count}, matched {len(agreement.matched_iou)}, "
            f"mean IoU {mean_iou:.3f}, labels agree {agreement.labels_agree}",
            flush=True,
        )
    figures = summary(results)
    print(f"{model_label(args)} on {device}, {folder}: fp32 vs {args.other}")
    for name, value in figures.items():
        print(f"  {name:<26}{value:.3f}" if isinstance(value, float) else f"  {name:<26}{value}")
    if args.json:
        record = {"model": model_label(args), "device": str(device), "other": args.other, **figures}
        record["pages_detail"] = [asdict(result) for result in results]
        with args.json.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
