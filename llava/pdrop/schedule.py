"""The PyramidDrop schedule: where the stages end and how many image tokens each keeps.

A schedule is two lists of equal length S-1 (S = number of stages):

* ``layer_list[s]``: boundary ``s``, counted in decoder layers already run (1-based). ``[8, 16, 24]``
  on a 32-layer LLM drops after layers 8, 16 and 24. Strictly increasing, each in
  ``[1, num_hidden_layers - 1]``: a boundary needs a next layer to score with.
* ``image_token_ratio_list[s]``: after boundary ``s`` a sample keeps ``floor(N0 * ratio)`` image
  tokens, where ``N0`` is the number it had at the input. Each ratio in ``(0, 1]``, non-increasing.

``position_mode`` says how position ids behave after a drop: ``"compact"`` (default, as the paper's
code) closes the gaps left by dropped tokens; ``"original"`` keeps each token's input position.

``method`` says how the image tokens are ranked at a boundary (the baselines share everything else:
the queries, the keep counts, the compaction, the cache):

* ``"pdrop"`` (PyramidDrop): the attention the query tokens would pay in the *next* layer, from that
  layer's own q/k projections of the current hidden states.
* ``"fastv"`` (FastV, Chen et al. 2024): the attention they paid in the *last layer run*, the
  previous one. With one boundary ``[K]`` and ratio ``1 - R`` this is FastV(K, R).
* ``"random"``: a seeded random choice (``seed``) of the same number of tokens.

Invalid schedules are refused at construction with a ``ValueError`` that names the field and value.

:func:`kept_image_tokens` is the one place the rule ``floor(N0 * ratio)`` is written: the decoder,
the schedule and the FLOPs count all call it. :meth:`PDropConfig.for_budget` solves the paper's
``lambda`` for a target average image-token count or FLOPs ratio.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

POSITION_MODES = ("compact", "original")
METHODS = ("pdrop", "fastv", "random")
KEYS = ("layer_list", "image_token_ratio_list", "position_mode", "method", "seed")


def kept_image_tokens(n0: int, ratio: float) -> int:
    """Image tokens a sample with ``n0`` input image tokens keeps at a boundary of ``ratio``: ``floor(n0 * ratio)``."""
    return math.floor(n0 * ratio)


@dataclass(frozen=True)
class PDropConfig:
    """A validated PyramidDrop schedule (see the module docstring for the rule)."""

    layer_list: tuple[int, ...]
    """Stage boundaries in layers already run, e.g. ``(8, 16, 24)``."""
    image_token_ratio_list: tuple[float, ...]
    """Image tokens kept after each boundary, relative to the input count, e.g. ``(0.5, 0.25, 0.125)``."""
    position_mode: str = "compact"
    """``"compact"`` renumbers positions over the kept tokens; ``"original"`` keeps input positions."""
    method: str = "pdrop"
    """How image tokens are ranked: ``"pdrop"``, ``"fastv"`` or ``"random"`` (see the module docstring)."""
    seed: int = 0
    """Seed of ``method="random"`` (the choice at boundary ``b`` uses ``seed`` and ``b``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_list", _as_layer_tuple(self.layer_list))
        object.__setattr__(self, "image_token_ratio_list", _as_ratio_tuple(self.image_token_ratio_list))
        _check_lengths(self.layer_list, self.image_token_ratio_list)
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode={self.position_mode!r} is not one of {POSITION_MODES}")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an integer")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lambda(
        cls, lambda_: float, stages: int, num_hidden_layers: int, position_mode: str = "compact"
    ) -> "PDropConfig":
        """The paper's shorthand: ``stages`` equal stages, ratio ``lambda_ ** s`` after boundary ``s``.

        Boundaries are ``s * num_hidden_layers / stages`` for ``s = 1 .. stages-1``; they must be whole
        layers (e.g. 32 layers and 4 stages give 8, 16, 24), otherwise pass ``layer_list`` explicitly.
        """
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 2:
            raise ValueError(f"stages={stages!r} must be an integer >= 2")
        if isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int) or num_hidden_layers < stages:
            raise ValueError(f"num_hidden_layers={num_hidden_layers!r} must be an integer >= stages ({stages})")
        if not isinstance(lambda_, (int, float)) or isinstance(lambda_, bool) or not 0 < lambda_ <= 1:
            raise ValueError(f"lambda={lambda_!r} must be in (0, 1]")
        if num_hidden_layers % stages:
            raise ValueError(
                f"stages={stages} does not divide num_hidden_layers={num_hidden_layers} into whole layers; "
                "pass layer_list explicitly"
            )
        step = num_hidden_layers // stages
        layers = [s * step for s in range(1, stages)]
        ratios = [float(lambda_) ** s for s in range(1, stages)]
        return cls(tuple(layers), tuple(ratios), position_mode)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "PyramidDrop config") -> "PDropConfig":
        """Inverse of :meth:`to_dict` (what ``model.config.pdrop`` holds); ``where`` names the source in errors."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a dict such as {{'layer_list': [8, 16, 24], 'image_token_ratio_list': "
                             f"[0.5, 0.25, 0.125]}}, got {type(data).__name__} {data!r}")
        unknown = set(data) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown PyramidDrop config keys in {where}: {sorted(unknown)}")
        missing = [key for key in KEYS[:2] if key not in data]
        if missing:
            raise ValueError(f"{where} lacks {missing} (a schedule needs layer_list and image_token_ratio_list)")
        return cls(
            layer_list=data["layer_list"],
            image_token_ratio_list=data["image_token_ratio_list"],
            position_mode=data.get("position_mode", "compact"),
            method=data.get("method", "pdrop"),
            seed=data.get("seed", 0),
        )

    @classmethod
    def from_strings(
        cls, layer_list: str, image_token_ratio_list: str, position_mode: str = "compact", method: str = "pdrop",
        seed: int = 0,
    ) -> "PDropConfig":
        """Parse the command-line form: ``--layer_list '[8,16,24]' --image_token_ratio_list '[0.5,0.25,0.125]'``."""
        return cls(_parse_list("layer_list", layer_list), _parse_list("image_token_ratio_list", image_token_ratio_list),
                   position_mode, method, seed)

    @classmethod
    def fastv(cls, k: int, ratio_dropped: float, position_mode: str = "compact") -> "PDropConfig":
        """FastV(K, R): after layer ``k``, drop the fraction ``ratio_dropped`` of the image tokens, once."""
        if not 0 <= ratio_dropped < 1:
            raise ValueError(f"FastV ratio R={ratio_dropped!r} must be in [0, 1)")
        return cls((k,), (1.0 - ratio_dropped,), position_mode, method="fastv")

    def image_token_layers(self, num_hidden_layers: int) -> float:
        """Layers x fraction of image tokens present, summed over layers (what image-token FLOPs scale with)."""
        ratios = (1.0, *self.image_token_ratio_list)
        return sum(len(layers) * r for layers, r in zip(self.stage_layers(num_hidden_layers), ratios))

    def fastv_at_equal_flops(self, num_hidden_layers: int, k: int) -> "PDropConfig":
        """The FastV(``k``, R) whose image tokens cost as many layer passes as this schedule's."""
        budget = self.image_token_layers(num_hidden_layers)
        keep = (budget - k) / (num_hidden_layers - k)
        if not 0 < keep <= 1:
            raise ValueError(f"no FastV ratio at K={k} matches {budget:.2f} image-token layers of {num_hidden_layers}")
        return PDropConfig((k,), (keep,), self.position_mode, method="fastv")

    # ------------------------------------------------------------------ queries
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layer_list"] = list(self.layer_list)
        data["image_token_ratio_list"] = list(self.image_token_ratio_list)
        # the baselines' fields only when used: a PyramidDrop checkpoint's config stays as the paper's code reads it
        if self.method == "pdrop":
            del data["method"], data["seed"]
        elif self.method != "random":
            del data["seed"]
        return data

    @property
    def num_stages(self) -> int:
        return len(self.layer_list) + 1

    def validate_for(self, num_hidden_layers: int) -> None:
        """Refuse boundaries that a model with ``num_hidden_layers`` layers cannot have."""
        last = self.layer_list[-1]
        if last > num_hidden_layers - 1:
            raise ValueError(
                f"layer_list={list(self.layer_list)}: boundary {last} needs a next layer to rank with, "
                f"but the language model has only {num_hidden_layers} layers (boundaries must be <= "
                f"{num_hidden_layers - 1})"
            )

    def stage_layers(self, num_hidden_layers: int) -> list[range]:
        """The decoder layer indices (0-based) of each stage: ``[range(0, 8), range(8, 16), ...]``."""
        self.validate_for(num_hidden_layers)
        edges = [0, *self.layer_list, num_hidden_layers]
        return [range(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def keep_count(self, n0: int, boundary: int) -> int:
        """Image tokens a sample with ``n0`` input image tokens keeps after ``boundary`` (0-based)."""
        return kept_image_tokens(n0, self.image_token_ratio_list[boundary])

    # ------------------------------------------------------------------ budgets
    @classmethod
    def for_budget(cls, *, avg_image_tokens: float | None = None, flops_ratio: float | None = None,
                   num_hidden_layers: int, image_tokens: int, stages: int = 4, hidden_size: int | None = None,
                   intermediate_size: int | None = None, position_mode: str = "compact") -> "PDropConfig":
        """The paper's schedule (``stages`` equal stages, ratio ``lambda ** s``) whose cost meets a budget.

        Give exactly one of ``avg_image_tokens`` (image tokens per layer, averaged over the layers, for a
        sample of ``image_tokens`` input image tokens) or ``flops_ratio`` (the paper's image-token FLOPs
        over no drop; needs ``hidden_size`` and ``intermediate_size``). The result is the largest
        ``lambda`` (4 decimals) whose figure does not exceed the budget; :func:`budget_figures` states
        what it achieves. A budget outside the reachable range (``lambda`` -> 0 .. 1) is refused with it.
        """
        from .flops import BudgetProblem  # the FLOPs count sits beside the schedule, one level down

        problem = BudgetProblem.make(avg_image_tokens, flops_ratio, num_hidden_layers, image_tokens, stages,
                                     hidden_size, intermediate_size)
        return cls.from_lambda(problem.solve(), stages, num_hidden_layers, position_mode)


def _as_layer_tuple(values: Sequence[int]) -> tuple[int, ...]:
    values = _as_sequence("layer_list", values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"layer_list={list(values)}: {v!r} is not an integer layer count")
        if v < 1:
            raise ValueError(f"layer_list={list(values)}: boundary {v} must be >= 1")
    for a, b in zip(values[:-1], values[1:]):
        if b <= a:
            raise ValueError(f"layer_list={list(values)} must be strictly increasing ({a} then {b})")
    return tuple(values)


def _as_ratio_tuple(values: Sequence[float]) -> tuple[float, ...]:
    values = _as_sequence("image_token_ratio_list", values)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"image_token_ratio_list={list(values)}: {v!r} is not a number")
        if not 0 < v <= 1:
            raise ValueError(f"image_token_ratio_list={list(values)}: ratio {v} is outside (0, 1]")
    for a, b in zip(values[:-1], values[1:]):
        if b > a:
            raise ValueError(f"image_token_ratio_list={list(values)} must be non-increasing ({a} then {b})")
    return tuple(float(v) for v in values)


def _as_sequence(name: str, values: Any) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name}={values!r} must be a list")
    if len(values) == 0:
        raise ValueError(f"{name} is empty: a schedule needs at least one boundary (use None to turn PyramidDrop off)")
    return list(values)


def _check_lengths(layers: tuple[int, ...], ratios: tuple[float, ...]) -> None:
    if len(layers) != len(ratios):
        raise ValueError(
            f"layer_list has {len(layers)} boundaries {list(layers)} but image_token_ratio_list has "
            f"{len(ratios)} ratios {list(ratios)}: they must have one ratio per boundary"
        )


def _parse_list(name: str, text: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}={text!r} is not a JSON list such as [8,16,24]: {err}") from None
    return value
