#!/usr/bin/env bash
# The prepared GPU check: the CUDA tests, the two H100/H200 benchmark runs at reduced repeats, the NeXT
# prefill with the compiled ranking beside the eager one, and the mid-size preset (where fixed costs per
# boundary and per decode step show), then one summary (JSON + markdown) against
# configs/bench/targets-gpu.json. 4 minutes on one H200 without the compiled-ranking run (238 s,
# 2026-11-30; that run is new and not yet timed there). Every step has its own time limit and all of them
# together stop within $BUDGET seconds (default 480): a step that would start with less than 10 s left
# is skipped and reported. Needs no network.
#
#   bash scripts/bench/gpu_check.sh                  # results in gpu_check_out/ (or $OUT)
#   WHEELS=.whl bash scripts/bench/gpu_check.sh      # first install the wheels placed there (no index)
#
# Wheels: a machine whose transformers is older than pyproject.toml's floor gets it from $WHEELS
# (default .whl/ at the repository root, when it holds wheels), installed into a folder of its own
# and put first on PYTHONPATH: the machine's CUDA torch is never replaced.
# Environment: OUT (results folder), WHEELS, PYTHON (default python3), REPEATS (default 3),
# METHODS (default none,pdrop,fastv,ideal), BUDGET (seconds for all steps, default 480).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

OUT=${OUT:-gpu_check_out}
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
REPEATS=${REPEATS:-3}
METHODS=${METHODS:-none,pdrop,fastv,ideal}
BUDGET=${BUDGET:-480}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$site:$PYTHONPATH"
fi
"$PYTHON" - <<'PY' || exit 1
import sys
import torch, transformers
from packaging.version import Version
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device: run it on a GPU machine")
if Version(transformers.__version__) < Version("5.18"):
    sys.exit("gpu_check: transformers >= 5.18 is needed: place its wheel in $WHEELS (pip download --no-deps transformers)")
print(torch.cuda.get_device_name())
PY
nvidia-smi -L > "$OUT/gpu.txt" 2>&1 || true

# step LIMIT COMMAND...: COMMAND under `timeout`, within LIMIT seconds and what is left of BUDGET
step() {
    local limit=$1 left=$((BUDGET - SECONDS))
    shift
    if ((left < 10)); then
        echo "gpu_check: the budget of ${BUDGET} s is spent; skipped: $*" >&2
        return 1
    fi
    timeout $((limit < left ? limit : left)) "$@"
}

status=0
# 1. the CUDA tests (tests/cuda: bf16, SDPA, FlashAttention-2 when importable, memory, host reads)
step 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/cuda 2>&1 | tee "$OUT/cuda_tests.log" || status=1
# 2. the two benchmark runs the targets name (reduced repeats)
common=(--dtype bfloat16 --attn sdpa --methods "$METHODS" --warmup 1 --repeats "$REPEATS")
step 200 "$PYTHON" -m llava.bench --preset llava-next-7b "${common[@]}" --batch_size 1 --train_batch_size 2 \
    --max_new_tokens 64 --json "$OUT/next-7b.json" || status=1
step 150 "$PYTHON" -m llava.bench --preset llava-1.5-7b "${common[@]}" --batch_size 8 --tasks train,train_ckpt \
    --json "$OUT/llava-1.5-7b.json" || status=1
# 2b. the opt-in compiled ranking beside the eager one on the NeXT prefill (two warmup prefills take the compiles;
#     the targets with "method": "pdrop_compiled" read this run)
step 150 "$PYTHON" -m llava.bench --preset llava-next-7b --dtype bfloat16 --attn sdpa \
    --methods none,pdrop,pdrop_compiled,ideal --tasks prefill --warmup 2 --repeats 10 --batch_size 1 \
    --json "$OUT/next-7b-compiled.json" || status=1
# 3. the mid-size preset (32 layers, hidden 512): on a GPU each layer is a handful of short kernels, so the
#    fixed cost per boundary and per decode step shows here as it does on CPU
step 90 "$PYTHON" -m llava.bench --preset cpu-mid "${common[@]}" --batch_size 1 --max_new_tokens 32 \
    --json "$OUT/cpu-mid.json" || status=1
# 4. one summary against the targets
runs=()
for f in "$OUT/next-7b.json" "$OUT/llava-1.5-7b.json" "$OUT/next-7b-compiled.json" "$OUT/cpu-mid.json"; do
    if [[ -f $f ]]; then runs+=("$f"); fi
done
if ((${#runs[@]})); then
    "$PYTHON" -m llava.bench.summary "${runs[@]}" --targets configs/bench/targets-gpu.json \
        --markdown "$OUT/summary.md" --json "$OUT/summary.json" || status=1
fi
exit $status
