#!/usr/bin/env bash
# Every GPU check of docsam in one run, for a lent GPU machine (an H200 for 15 minutes of device time in
# all, start-up included; one command may run 10 minutes). Prepare here, then run from the repository root
# through the device tool:
#
#   bash benchmarks/gpu_prepare.sh
#   run(command="bash benchmarks/gpu_checks.sh", carry=["fixtures-local"], timeout_s=600)
#
# Steps, most important first (those no run has done yet come before those measured on 2026-12-04);
# each has its own time limit, a failed or timed-out step does not stop the others, and none starts once
# the whole run's budget (GPU_CHECKS_BUDGET, 540 s; with --cpu-smoke 5x that) is spent:
#   parity      pytest -m gpu: the fixture parity tests on CUDA in float32, and post-processing on CUDA
#   speed       DocSAM-Large, bf16, random weights, synthetic A4 pages: pages/s and peak GPU memory
#   kernels     one page under torch.profiler: per stage host seconds beside kernel seconds, top operators
#   segment     `docsam segment` end to end on real pages and PDFs, a random-weight DocSAM-Base file
#   ranks       that command alone and as 2 and 4 processes sharing the GPU (torchrun), pages/s
#   finetune    a 200-step bf16 `docsam finetune` of the random DocSAM-Base on PubLayNet pages: loss drop
#   inputs      pages/s of decoding and rendering the PDFs with 8 workers, beside the model's
#   writers     `docsam segment`'s batch runner with 1, 2, 4 and 8 writing threads behind a stand-in model
#               of 0.1 s/page (no GPU needed; the figure that matters is this machine's many cores)
#   syncs       device → host synchronisations per page (CUDA sync debug mode), by stage and call site
#   breakdown   seconds, FLOPs and operators per pipeline stage, DocSAM-Large bf16
#   divergence  the first modules whose CUDA outputs depart from the CPU's (TF32 allowed, then not)
#   agreement   bf16 against fp32 on the real pages: instance counts, mask IoU, labels
#   train       benchmarks/train_speed.py, DocSAM-Large bf16, batch 4
#   sweep       pages/s and peak memory for fp32/bf16 × batch 8/16/32 × isolated or not
# Figures go to $OUT (default benchmarks/out): summary.txt, figures.jsonl (one JSON line per measurement),
# gpu_checks.log (everything printed), segment-records.txt (the page records, each cut to 300 characters: with
# random weights a page has hundreds of instances), finetune-log.jsonl.
#
#   bash benchmarks/gpu_checks.sh --cpu-smoke   # on the CPU, all but divergence and sweep: the tiny model,
#                                               # float32 (bf16 only against it), tiny counts, 5x limits
#                                               # and budget
#
#   GPU_CHECKS_STEPS=parity,segment bash benchmarks/gpu_checks.sh   # only the steps named (comma-separated),
#                                               # in the order above: when device time allows no full run
set -u

SMOKE=0
[[ ${1:-} == --cpu-smoke ]] && SMOKE=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_checks.log
FIGURES=$OUT/figures.jsonl
SUMMARY=$OUT/summary.txt
WORK=$(mktemp -d "${TMPDIR:-/tmp}/docsam-gpu.XXXXXX")
: >"$LOG"
: >"$FIGURES"
: >"$SUMMARY"
PY=${PYTHON:-python3}
START=$(date +%s)
export PYTHONUNBUFFERED=1 OUT FIGURES WORK PY

first_dir() {
    for dir in "$@"; do [[ -d $dir ]] && { echo "$dir"; return; }; done
}
export PAGES_DIR PDFS_DIR
PAGES_DIR=$(first_dir fixtures-local/pages ../shared/data/pages)
PDFS_DIR=$(first_dir fixtures-local/pdfs ../shared/data/pdfs/pdf-docling-tests)
REFERENCE=$(first_dir fixtures-local/reference ../shared/fixtures/reference)

# --- set-up: missing packages, ../shared for the tests, poppler ---------------------------------------
if compgen -G "fixtures-local/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" fixtures-local/wheels/*.whl >>"$LOG" 2>&1
    export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ ! -d ../shared/fixtures/reference && -n $REFERENCE ]]; then
    mkdir -p ../shared/fixtures ../shared/data
    ln -sfn "$ROOT/$REFERENCE" ../shared/fixtures/reference
    [[ -n $PAGES_DIR ]] && ln -sfn "$ROOT/$PAGES_DIR" ../shared/data/pages
fi
if ! command -v pdftoppm >/dev/null && [[ -x fixtures-local/poppler/bin/pdftoppm ]]; then
    export PATH="$ROOT/fixtures-local/poppler/bin:$PATH"
fi
pdfinfo -v >/dev/null 2>&1 && POPPLER=yes || POPPLER=no

if ((SMOKE)); then
    TINY=$(first_dir fixtures-local/reference ../shared/fixtures/reference)/tiny-config.json
    export DEVICE=cpu PRECISION=fp32 LARGE="--model-config $TINY" BASE_CONFIG=$TINY
    LIMIT_SCALE=5  # a loaded 2-core CPU is slow even for the tiny model: steps' limits and the budget
    SPEED_PAGES=1 SYNC_PAGES=1 AGREE_PAGES=1 SEGMENT_IMAGES=2 SEGMENT_PDFS=1 SWEEP_PAGES=1 INPUT_WORKERS=2
    WRITERS=1,2 WRITE_PAGES=4
    export RANK_PROCESSES=1,2 RANK_PAGES=4
    export TRAIN_ARGS="--config $TINY --size 128 --iters 2 --warmup 1"
    export FINETUNE_ARGS="--iters 4 --batch-size 1 --workers 0 --short-range 160,192 --patch-size 128,128"
    export SEGMENT_ARGS="--short-side 192 --window 128"
else
    export DEVICE=cuda PRECISION=bf16 LARGE="--variant large" BASE_CONFIG=base
    LIMIT_SCALE=1
    SPEED_PAGES=20 SYNC_PAGES=2 AGREE_PAGES=12 SEGMENT_IMAGES=6 SEGMENT_PDFS=2 SWEEP_PAGES=8 INPUT_WORKERS=8
    WRITERS=1,2,4,8 WRITE_PAGES=24
    export RANK_PROCESSES=1,2,4 RANK_PAGES=24  # random weights: hundreds of instances a page to write
    export TRAIN_ARGS="--variant large"
    export FINETUNE_ARGS="--iters 200 --batch-size 4 --workers 4"
    export SEGMENT_ARGS=""
fi
export SEGMENT_IMAGES SEGMENT_PDFS POPPLER PRECISION
BUDGET=${GPU_CHECKS_BUDGET:-$((540 * LIMIT_SCALE))}

{
    echo "docsam GPU checks, $(date -u +%Y-%m-%dT%H:%M:%SZ), smoke=$SMOKE, poppler=$POPPLER"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
        "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    echo "pages: ${PAGES_DIR:-none}, pdfs: ${PDFS_DIR:-none}, reference fixtures: ${REFERENCE:-none}"
} 2>&1 | tee -a "$LOG" "$SUMMARY"

# --- the step runner ----------------------------------------------------------------------------------
step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$(($2 * LIMIT_SCALE)) left status
    shift 2
    if [[ -n ${GPU_CHECKS_STEPS:-} && ,$GPU_CHECKS_STEPS, != *,$name,* ]]; then
        return
    fi
    left=$((BUDGET - ($(date +%s) - START)))
    if ((left < 15)); then
        printf '%-11s %-22s\n' "$name" "skipped (budget spent)" | tee -a "$SUMMARY"
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local started=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local code=${PIPESTATUS[0]}
    case $code in
        0) status=ok ;;
        124 | 137) status="timed out" ;;
        *) status="failed ($code)" ;;
    esac
    printf '%-11s %-22s %5ss\n' "$name" "$status" "$(($(date +%s) - started))" | tee -a "$SUMMARY"
}

random_model() {  # a random-weight model file for the command-line steps (DocSAM-Base, or the tiny model)
    [[ -f $WORK/random.safetensors ]] && return
    "$PY" - <<'EOF'
import os
from pathlib import Path

import torch

from model import DocSAM, DocSAMConfig, save_model, variant_config

name = os.environ["BASE_CONFIG"]
config = variant_config(name) if name in ("base", "large") else DocSAMConfig.from_json(Path(name))
torch.manual_seed(0)
save_model(DocSAM(config), Path(os.environ["WORK"]) / "random.safetensors")
EOF
}

segment_end_to_end() {
    random_model || return 1
    local inputs=()
    mapfile -t inputs < <(find "$PAGES_DIR" -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.tif' \) |
        sort | head -n "$SEGMENT_IMAGES")
    if [[ $POPPLER == yes ]]; then
        mapfile -t -O "${#inputs[@]}" inputs < <(find "$PDFS_DIR" -type f -name '*.pdf' | sort | head -n "$SEGMENT_PDFS")
    else
        echo "poppler missing: PDFs left out"
    fi
    # shellcheck disable=SC2086
    "$PY" -m docsam_cli segment "${inputs[@]}" --weights "$WORK/random.safetensors" --out "$WORK/segment" \
        --device "$DEVICE" --precision "$PRECISION" --pages 1-2 --workers 4 $SEGMENT_ARGS >"$WORK/records.jsonl"
    local code=$?
    cut -c1-300 "$WORK/records.jsonl" >"$OUT/segment-records.txt"
    echo "exit code $code, $(wc -l <"$WORK/records.jsonl") page records, inputs ${#inputs[@]}"
    ls "$WORK/segment" "$WORK/segment/page" | head -n 20
    return $code
}

finetune_loss_drop() {
    random_model || return 1
    "$PY" -m docsam_cli convert-dataset "$PAGES_DIR/publaynet/annotations.json" --from coco \
        --images "$PAGES_DIR/publaynet/images" --out "$WORK/publaynet" --dataset-name PubLayNet --overwrite ||
        return 1
    # shellcheck disable=SC2086
    "$PY" -m docsam_cli finetune "$WORK/publaynet" --out "$WORK/finetune" \
        --weights "$WORK/random.safetensors" --precision "$PRECISION" --device "$DEVICE" --lr 1e-4 --val-every 0 \
        --log-every 1 --checkpoint-every 100000 --no-progress $FINETUNE_ARGS || return 1
    cp "$WORK/finetune/log.jsonl" "$OUT/finetune-log.jsonl"
    "$PY" - <<'EOF'
import json, os
from pathlib import Path

log = [json.loads(line) for line in (Path(os.environ["WORK"]) / "finetune" / "log.jsonl").open()]
losses = [record["loss"] for record in log if "loss" in record]
head, tail = losses[: max(1, len(losses) // 20)], losses[-max(1, len(losses) // 10) :]
start, end = sum(head) / len(head), sum(tail) / len(tail)
print(f"finetune: {len(losses)} steps, loss {start:.2f} (first {len(head)}) -> {end:.2f} (last {len(tail)})")
with open(os.environ["FIGURES"], "a") as handle:
    handle.write(json.dumps({"mode": "finetune", "steps": len(losses), "loss_start": start, "loss_end": end}) + "\n")
raise SystemExit(0 if end < start else "the loss did not go down")
EOF
}

ranks_speed() {  # several processes on one GPU: their host-side work side by side
    random_model || return 1
    "$PY" benchmarks/segment_ranks.py --weights "$WORK/random.safetensors" --device "$DEVICE" \
        --precision "$PRECISION" --processes "$RANK_PROCESSES" --pages "$RANK_PAGES" --geometry="$SEGMENT_ARGS"
}

train_speed() {
    local batch=--batch
    "$PY" benchmarks/train_speed.py --help | grep -q -- --batch-size && batch=--batch-size
    # shellcheck disable=SC2086
    "$PY" benchmarks/train_speed.py $TRAIN_ARGS --precision "$PRECISION" "$batch" 4 --device "$DEVICE"
}
export -f random_model segment_end_to_end ranks_speed finetune_loss_drop train_speed

SPEED=("$PY" -m benchmarks.segment_speed --device "$DEVICE" --json "$FIGURES")
# shellcheck disable=SC2086
{
    if ((SMOKE)); then
        step parity 300 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_inference_gpu.py
    else
        # test modules needing packages the device lacks (trustme, ...) must not stop the GPU tests; the
        # MiniLM weights stay behind, the parity tests take the fixture's text embeddings (tests/conftest.py)
        export DOCSAM_TEXT_FROM_FIXTURES=1
        step parity 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu --continue-on-collection-errors tests
    fi
    step speed 120 "${SPEED[@]}" $LARGE --precision "$PRECISION" --pages "$SPEED_PAGES"
    step kernels 90 "${SPEED[@]}" $LARGE --precision "$PRECISION" --pages 1 --kernels
    step segment 150 bash -c segment_end_to_end
    step ranks 150 bash -c ranks_speed
    step finetune 200 bash -c finetune_loss_drop
    step inputs 90 "${SPEED[@]}" $LARGE --precision "$PRECISION" --pages "$SPEED_PAGES" \
        --inputs "$PDFS_DIR" --workers "$INPUT_WORKERS"
    step writers 60 "$PY" benchmarks/write_speed.py --writers "$WRITERS" --pages "$WRITE_PAGES" \
        --model-seconds 0.1 --workers "$INPUT_WORKERS"
    step syncs 90 "${SPEED[@]}" $LARGE --precision "$PRECISION" --pages "$SYNC_PAGES" --count-syncs
    step breakdown 120 "${SPEED[@]}" $LARGE --precision "$PRECISION" --pages 1 --breakdown
    ((SMOKE)) || step divergence 60 "$PY" -m benchmarks.device_divergence --reference "$REFERENCE"
    step agreement 120 "$PY" -m benchmarks.precision_agreement $LARGE --device "$DEVICE" \
        --pages "$AGREE_PAGES" --pages-dir "$PAGES_DIR" --json "$FIGURES"
    step train 120 bash -c train_speed
    if ((SMOKE)); then
        echo "sweep: needs CUDA, left out of the smoke run" | tee -a "$SUMMARY"
    else
        step sweep 240 "${SPEED[@]}" $LARGE --pages "$SWEEP_PAGES" --sweep
    fi
}

echo "--- summary ($(($(date +%s) - START)) s; figures in $FIGURES)"
cat "$SUMMARY"
rm -rf "$WORK"
