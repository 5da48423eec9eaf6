#!/usr/bin/env bash
# The embedded demo (README main job): write a synthetic VQA task whose questions say which part of the
# picture holds the answer, train a small LLaVA on it on CPU through the training scripts (projector, then
# finetunes without and with PyramidDrop), and compare no drop, PyramidDrop (trained / training-free), FastV
# and random dropping at equal image-token FLOPs over 3 evaluation seeds, beside chance and the majority
# answer. Runs are reused only when their settings match. Flags go to `python -m llava.demo` (see --help).
#   bash scripts/demo.sh
#   bash scripts/demo.sh --out playground/demo --eval_seeds 5
#   PYTHON=.venv/bin/python bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python}" -m llava.demo "$@"
