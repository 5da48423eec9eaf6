"""``python -m llava.bench``: the speed benchmark (:mod:`llava.bench.speed`).

Launch::

    python -m llava.bench --preset tiny-llava --device cpu
    python -m llava.bench --preset llava-next-7b --dtype bfloat16 --attn sdpa --batch_size 2 --json out.json
"""

from ..cli import cli_main
from .speed import main

if __name__ == "__main__":
    cli_main(main, prog="llava.bench")
