"""Run our models under lmms-eval (``--model pdrop_llava``), with the schedule as model arguments.

lmms-eval finds the model through the ``lmms_eval.models`` entry point this package declares
(pyproject.toml), so nothing needs patching::

    pip install lmms-eval   # not a dependency of this package
    python -m lmms_eval --model pdrop_llava --tasks pope --batch_size 8 \\
        --model_args pretrained=checkpoints/llava-v1.5-7b-pdrop,layer_list=[8;16;24],image_token_ratio_list=[0.5;0.25;0.125]

Model arguments: ``pretrained`` (folder or Hub id), ``conv_mode`` (vicuna_v1), ``batch_size``,
``max_new_tokens`` (default 128), ``dtype``, ``device``, ``attn_implementation``, ``layer_list`` /
``image_token_ratio_list`` (lmms-eval splits ``--model_args`` on commas: write ``;`` inside the
lists), and the other schedule flags of every command (``llava/pdrop/args.py``) by their names:
``pdrop_schedule``, ``pdrop_lambda``, ``pdrop_stages``, ``pdrop_budget`` (``tokens:192``: lmms-eval
splits on ``=``), ``pdrop_position_mode``, ``drop_method`` (pdrop, fastv, random), ``drop_seed``,
``no_pdrop``. Without schedule arguments the checkpoint's saved schedule applies. Generation tasks only (``generate_until``); prompts are built
by the same code as training and :mod:`llava.eval.run`.
"""

from __future__ import annotations

import argparse

from lmms_eval.api.model import lmms

from .loading import default_aspect_ratio, load_for_eval
from .run import Answerer

MODEL_ID = "pdrop_llava"
SCHEDULE_FIELDS = ("pdrop_schedule", "pdrop_lambda", "pdrop_stages", "pdrop_budget", "pdrop_position_mode", "drop_seed")


def manifest():
    """The lmms-eval model manifest (the entry point's payload)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.PDropLlavaLmms")


class PDropLlavaLmms(lmms):
    """lmms-eval model: batched greedy generation with PyramidDrop (or a baseline, or no drop)."""

    def __init__(self, pretrained: str, conv_mode: str = "vicuna_v1", batch_size: int | str = 1,
                 max_new_tokens: int | str = 128, dtype: str = "float32", device: str | None = None,
                 attn_implementation: str = "sdpa", layer_list: str | None = None,
                 image_token_ratio_list: str | None = None, drop_method: str | None = None,
                 no_pdrop: bool | str = False, **schedule):
        super().__init__()
        args = argparse.Namespace(
            model_path=pretrained, dtype=dtype, device=device, attn_implementation=attn_implementation,
            no_pdrop=str(no_pdrop).lower() in ("1", "true"), layer_list=_list_arg(layer_list),
            image_token_ratio_list=_list_arg(image_token_ratio_list), drop_method=drop_method,
            **{name: schedule.get(name) for name in SCHEDULE_FIELDS if name in schedule},
        )
        self.model, self.processor = load_for_eval(args)
        self.answerer = Answerer(self.model, self.processor, conv_mode, None, default_aspect_ratio(self.model.config))
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    def generate_until(self, requests) -> list[str]:
        answers = []
        for start in range(0, len(requests), self.batch_size_per_gpu):
            chunk = requests[start:start + self.batch_size_per_gpu]
            prompts = [self.answerer.prompt(self._question(request)) for request in chunk]
            gen_kwargs = dict(chunk[0].args[1])
            until = gen_kwargs.get("until") or []
            texts = self.answerer.answer(
                prompts, max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)), do_sample=False,
                pad_token_id=self.processor.tokenizer.pad_token_id)
            answers += [_cut(text, [until] if isinstance(until, str) else until) for text in texts]
        return answers

    def _question(self, request) -> dict:
        context, _, doc_to_visual, doc_id, task, split = request.args
        visuals = [v for v in (doc_to_visual(self.task_dict[task][split][doc_id]) or []) if v is not None]
        question = {"question_id": doc_id, "text": context}
        if visuals:
            question["image"] = [v.convert("RGB") for v in visuals]
        return question

    def loglikelihood(self, requests):
        raise NotImplementedError("pdrop_llava runs generation tasks (generate_until) only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("pdrop_llava runs single-round generation tasks only")


def _list_arg(value: str | None) -> str | None:
    """``[8;16;24]`` (commas are lmms-eval's argument separator) -> ``[8,16,24]``."""
    return None if value is None else str(value).replace(";", ",")


def _cut(text: str, stops: list[str]) -> str:
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text.strip()
