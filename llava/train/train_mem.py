"""LLaVA's training entry point by its file name: ``deepspeed llava/train/train_mem.py ...`` runs llava.train.train.

LLaVA's and the official PyramidDrop scripts launch ``llava/train/train_mem.py`` as a file (with
``deepspeed`` or ``torchrun``); their flags are rewritten by llava/train/llava_compat.py. Launch::

    deepspeed llava/train/train_mem.py --deepspeed ./scripts/zero3.json --model_name_or_path lmsys/vicuna-7b-v1.5 \\
        --version v1 --mm_use_im_start_end False --lazy_preprocess True ...      # LLaVA's finetune.sh flags
    torchrun --nproc_per_node 8 llava/train/train_mem.py ...

Our own launchers (scripts/*_pdrop.sh) run ``python -m llava.train.train`` instead; both are the same program.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # run as a file, Python puts this folder first on the path, where train.py and trainer.py would shadow
    # other modules: the repository root takes its place, so `llava` imports with or without an install
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from llava.cli import cli_main
    from llava.train.train import run

    cli_main(run, prog="llava.train.train")
