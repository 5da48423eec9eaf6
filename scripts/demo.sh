#!/usr/bin/env bash
# The embedded default: a tiny random LLaVA generating with PyramidDrop on CPU.
#   bash scripts/demo.sh                       # tiny schedule from configs/schedules/tiny.json
#   SCHEDULE=tiny bash scripts/demo.sh --batch_size 3
set -euo pipefail
SCHEDULE=${SCHEDULE:-tiny}
exec python -m llava.demo --schedule "$SCHEDULE" "$@"
