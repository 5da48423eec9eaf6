"""``python -m llava.eval.model_vqa_mmbench``: LLaVA's MMBench evaluation (its .tsv; ``--lang cn`` for MMBench-CN).

LLaVA's command line as its scripts write it (``--model-path``, ``--question-file``, ``--conv-mode vicuna_v1``,
...), translated by llava/eval/llava_compat.py and answered by ``llava.eval.run``; ``--help`` lists the mapping.
"""

from .llava_compat import compat_main


def main(argv: list[str] | None = None):
    return compat_main("model_vqa_mmbench", argv)


if __name__ == "__main__":
    main()
