"""Time and peak memory to refuse a decompression-bomb PNG and a 200-inch PDF page with the default options.

Each case runs in a fresh process (interpreter start and imports included, as a user sees it); peak memory
is the largest resident set of that process and of poppler's, from `getrusage`. The process's address
space is capped (`--cap-gb`), so a broken guard fails fast instead of swapping the machine.

    python benchmarks/hostile_inputs.py                       # the input layer (iter_pages)
    python benchmarks/hostile_inputs.py --weights tiny.safetensors  # the whole `docsam segment` command
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from inputs_corpus import HUGE_PAGE_POINTS, write_bomb_png, write_pdf  # noqa: E402

INPUT_LAYER = """
import sys
from docsam_cli.inputs import iter_pages
for item in iter_pages(sys.argv[1:]):
    print(item)
"""


def measure(command: list[str], cap_bytes: int) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of the command or any process it waited for, last output line)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, preexec_fn=cap)
        watchdog = threading.Timer(600, process.kill)
        watchdog.start()
        _, status, usage = os.wait4(process.pid, 0)  # this process's own usage, poppler's included
        seconds = time.perf_counter() - started
        watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        lines = output.read().decode(errors="replace").strip().splitlines()
    return seconds, usage.ru_maxrss / 1024, lines[-1] if lines else f"exit {process.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="run `docsam segment` with these weights, not the input layer")
    parser.add_argument("--cap-gb", type=float, default=8.0, help="address-space cap per case (GB)")
    parser.add_argument("--case", choices=("png", "pdf", "both"), default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cases = {
            "png": write_bomb_png(Path(folder) / "bomb-20000x20000.png"),
            "pdf": write_pdf(Path(folder) / "poster-200in.pdf", HUGE_PAGE_POINTS, HUGE_PAGE_POINTS),
        }
        for name, path in cases.items():
            if args.case not in (name, "both"):
                continue
            if args.weights:
                out = Path(folder) / f"out-{name}"
                command = [sys.executable, "-m", "docsam_cli", "segment", str(path), "-o", str(out)]
                command += ["--weights", args.weights, "--device", "cpu"]
            else:
                command = [sys.executable, "-c", INPUT_LAYER, str(path)]
            seconds, peak_mb, last = measure(command, int(args.cap_gb * 2**30))
            size_kb = path.stat().st_size // 1024
            print(f"{path.name} ({size_kb} KB): {seconds:.2f} s, peak RSS {peak_mb:.0f} MB")
            print(f"  {last}")


if __name__ == "__main__":
    main()
