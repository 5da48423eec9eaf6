#!/usr/bin/env bash
# The embedded demo (README main job): train a tiny LLaVA on a synthetic VQA task on CPU through
# the training scripts, then compare no drop, PyramidDrop (trained / training-free), FastV and random
# dropping at equal FLOPs. Flags go to `python -m llava.demo` (see its --help).
#   bash scripts/demo.sh
#   bash scripts/demo.sh --out playground/demo --finetune_steps 300
#   PYTHON=.venv/bin/python bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python}" -m llava.demo "$@"
