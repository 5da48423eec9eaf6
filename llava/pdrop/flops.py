"""FLOPs of the language model under a schedule, counted as the paper does, and budgets solved for lambda.

Per decoder layer with ``n`` tokens, hidden size ``d`` and MLP size ``m``::

    flops(n) = 4 n d^2 + 2 n^2 d + 3 n d m

summed over the layers with each stage's ``n`` (text tokens always, image tokens
``kept_image_tokens(N0, ratio)`` after each boundary). The paper counts image tokens only
(LLaVA-1.5-7B, 576 image tokens: 3.82 -> 1.78 TFLOPs). The report and command line are in
:mod:`llava.bench.flops`; this module is the arithmetic the schedule and the benchmark share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .schedule import PDropConfig, kept_image_tokens

LAMBDA_DECIMALS = 4


@dataclass(frozen=True)
class ModelShape:
    """What the count needs of a model: its language model's shape and a sample's token counts."""

    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int
    image_tokens: int
    """N0 of a sample (LLaVA-1.5: 576; LLaVA-NeXT: 2,880 for a 2 x 2 grid, as the paper counts)."""
    text_tokens: int = 0

    @classmethod
    def from_preset(cls, spec: dict[str, Any]) -> "ModelShape":
        """A ``configs/models/`` preset (already loaded)."""
        text = spec["text_config"]
        return cls(text["num_hidden_layers"], text["hidden_size"], text["intermediate_size"], spec["image_tokens"],
                   spec.get("text_tokens", 0))

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """A transformers ``LlavaConfig`` / ``LlavaNextConfig``: N0 from the vision tower's patch grid.

        LLaVA-NeXT counts the base image plus a 2 x 2 grid of crops (5 x the base), the paper's 2,880.
        """
        text, vision = config.get_text_config(), config.vision_config
        base = (vision.image_size // vision.patch_size) ** 2
        if getattr(config, "vision_feature_select_strategy", "default") == "full":
            base += 1
        image_tokens = 5 * base if config.model_type == "llava_next" else base
        return cls(text.num_hidden_layers, text.hidden_size, text.intermediate_size, image_tokens)


def layer_flops(n: int, hidden_size: int, intermediate_size: int) -> int:
    """FLOPs of one decoder layer over ``n`` tokens (attention projections, attention, gated MLP)."""
    d, m = hidden_size, intermediate_size
    return 4 * n * d * d + 2 * n * n * d + 3 * n * d * m


def tokens_per_layer(num_layers: int, image_tokens: int, text_tokens: int, schedule: PDropConfig | None) -> list[int]:
    """Tokens each layer processes: text always, image ``floor(N0 * ratio)`` after each boundary."""
    if schedule is None:
        return [image_tokens + text_tokens] * num_layers
    counts = []
    for s, layers in enumerate(schedule.stage_layers(num_layers)):
        images = image_tokens if s == 0 else kept_image_tokens(image_tokens, schedule.image_token_ratio_list[s - 1])
        counts += [images + text_tokens] * len(layers)
    return counts


def llm_flops(num_layers: int, hidden_size: int, intermediate_size: int, image_tokens: int,
              text_tokens: int = 0, schedule: PDropConfig | None = None) -> int:
    """Total FLOPs of the language model's layers for one sample."""
    return sum(layer_flops(n, hidden_size, intermediate_size)
               for n in tokens_per_layer(num_layers, image_tokens, text_tokens, schedule))


def budget_figures(schedule: PDropConfig | None, shape: ModelShape) -> dict[str, float]:
    """What a schedule costs on ``shape``: average image tokens per layer and the paper's FLOPs ratio."""
    tokens = tokens_per_layer(shape.num_hidden_layers, shape.image_tokens, 0, schedule)
    dims = (shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size, shape.image_tokens)
    return {"avg_image_tokens": sum(tokens) / len(tokens),
            "flops_ratio": llm_flops(*dims, 0, schedule) / llm_flops(*dims, 0, None)}


@dataclass(frozen=True)
class BudgetProblem:
    """Find the largest ``lambda`` in (0, 1] whose figure (``metric``) stays within ``target``.

    The figure of ``lambda`` is non-decreasing (ratios ``lambda ** s``, floors of ``N0 x ratio``), so a
    bisection finds the edge; the reachable range runs from ``lambda -> 0`` (stage 0 alone holds image
    tokens) to ``lambda = 1`` (no drop).
    """

    metric: str  # "avg_image_tokens" or "flops_ratio"
    target: float
    shape: ModelShape
    stages: int

    @classmethod
    def make(cls, avg_image_tokens, flops_ratio, num_hidden_layers, image_tokens, stages, hidden_size,
             intermediate_size) -> "BudgetProblem":
        if (avg_image_tokens is None) == (flops_ratio is None):
            raise ValueError("give exactly one budget: avg_image_tokens or flops_ratio")
        if flops_ratio is not None and (hidden_size is None or intermediate_size is None):
            raise ValueError("a flops_ratio budget needs the model's hidden_size and intermediate_size")
        metric = "flops_ratio" if avg_image_tokens is None else "avg_image_tokens"
        target = flops_ratio if avg_image_tokens is None else avg_image_tokens
        if isinstance(target, bool) or not isinstance(target, (int, float)):
            raise ValueError(f"{metric}={target!r} must be a number")
        shape = ModelShape(num_hidden_layers, hidden_size or 1, intermediate_size or 1, image_tokens)
        PDropConfig.from_lambda(0.5, stages, num_hidden_layers)  # stages and layers are checked by the shorthand
        return cls(metric, float(target), shape, stages)

    def figure(self, lambda_: float) -> float:
        schedule = PDropConfig.from_lambda(lambda_, self.stages, self.shape.num_hidden_layers)
        return budget_figures(schedule, self.shape)[self.metric]

    def reachable(self) -> tuple[float, float]:
        """The figure as ``lambda -> 0`` (no image token after the first boundary) and at ``lambda = 1``."""
        lowest = PDropConfig.from_lambda(1e-12, self.stages, self.shape.num_hidden_layers)
        return budget_figures(lowest, self.shape)[self.metric], self.figure(1.0)

    def solve(self) -> float:
        low_figure, high_figure = self.reachable()
        if not low_figure <= self.target <= high_figure:
            raise ValueError(
                f"{self.metric}={self.target:g} cannot be reached with {self.stages} equal stages of "
                f"{self.shape.num_hidden_layers} layers and {self.shape.image_tokens} image tokens: the reachable "
                f"range is {low_figure:.4g} .. {high_figure:.4g} (more stages reach lower)")
        low, high = 0.0, 1.0  # figure(low) <= target always holds in the limit; find the edge from above
        if self.figure(high) <= self.target:
            return 1.0
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if self.figure(middle) <= self.target else (low, middle)
        rounded = int(low * 10**LAMBDA_DECIMALS) / 10**LAMBDA_DECIMALS
        return rounded if rounded > 0 else max(low, 1e-12)
