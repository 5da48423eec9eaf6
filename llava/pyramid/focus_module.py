"""The trained focus: LRS-VQA's Region Focus Module (RFM), a small stack of decoder layers that scores a level.

* **Built from the LLM** (:meth:`RegionFocusModule.from_decoder`): copies of its first ``focus_layer``
  decoder layers, then the scoring part of layer ``focus_layer`` (its input norm and q/k projections),
  the same RoPE and config. It has the language model's shape (``layers``, ``rotary_emb``, ``config``),
  so :func:`.focus.focus_scores` takes it in place of the LLM, and an untrained module scores exactly as
  the training-free focus with the same ``focus_layer``.
* **Trained** by distilling the full LLM's text-to-image attention (:mod:`.distill`,
  ``python -m llava.train.train --train_focus_module``), everything else frozen.
* **Saved** next to the model as ``focus_module.safetensors`` (:data:`FOCUS_MODULE_FILE`; its own file,
  which stock transformers ignores; keys ``layers.*``, metadata: ``focus_layer``, the distillation
  layers, the LLM's shape). Attached to a model as ``model.focus_module``, left out of the model's own
  ``save_pretrained``.
* **Used** by the coarse-to-fine driver with ``focus="trained"`` (:func:`focus_module_of`: the attached
  module, else the file next to the checkpoint the model was loaded from).

Example::

    module = RegionFocusModule.from_decoder(model.model.language_model, focus_layer=2, distill_layers=[3, 4, 5])
    attach_focus_module(model, module)
    save_focus_module(model, "checkpoints/next-rfm")
    load_focus_module(model, "checkpoints/next-rfm")      # a RegionFocusModule, attached
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

FOCUS_MODULE_FILE = "focus_module.safetensors"
ATTRIBUTE = "focus_module"  # the module's name on a LLaVA model


class ScoringAttention(nn.Module):
    """The part of a decoder layer's attention that PyramidDrop's ranking uses: ``q_proj``, ``k_proj``, ``head_dim``."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.q_proj = copy.deepcopy(attention.q_proj)
        self.k_proj = copy.deepcopy(attention.k_proj)
        self.head_dim = attention.head_dim


class ScoringLayer(nn.Module):
    """``input_layernorm`` + :class:`ScoringAttention` of a decoder layer: what scoring reads of the next layer."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.input_layernorm = copy.deepcopy(layer.input_layernorm)
        self.self_attn = ScoringAttention(layer.self_attn)


class RegionFocusModule(nn.Module):
    """``layers``: ``focus_layer`` decoder layers then one :class:`ScoringLayer`; ``rotary_emb`` and ``config``
    as the language model's. Scores with ``focus_scores(module, ..., module.focus_layer)``."""

    def __init__(self, layers: list[nn.Module], scorer: ScoringLayer, rotary_emb: nn.Module, config,
                 distill_layers: list[int] | None = None):
        super().__init__()
        self.layers = nn.ModuleList([*layers, scorer])
        self.rotary_emb = rotary_emb
        self.config = config
        self.distill_layers = list(distill_layers or [])  # the LLM layers it learns from (saved in the metadata)

    @property
    def focus_layer(self) -> int:
        """Decoder layers run before scoring (the index of the scoring layer)."""
        return len(self.layers) - 1

    @classmethod
    def from_decoder(cls, decoder: nn.Module, focus_layer: int,
                     distill_layers: list[int] | None = None) -> "RegionFocusModule":
        """Copies of ``decoder``'s layers ``0 .. focus_layer - 1`` and the scoring part of layer ``focus_layer``."""
        total = len(decoder.layers)
        if isinstance(focus_layer, bool) or not isinstance(focus_layer, int) or not 1 <= focus_layer <= total - 1:
            raise ValueError(f"focus_layer={focus_layer!r}: a focus module runs 1 .. {total - 1} layers of this "
                             f"{total}-layer language model before scoring with the next one")
        layers = [copy.deepcopy(layer) for layer in decoder.layers[:focus_layer]]
        return cls(layers, ScoringLayer(decoder.layers[focus_layer]), copy.deepcopy(decoder.rotary_emb),
                   decoder.config, distill_layers)


def attach_focus_module(model: nn.Module, module: RegionFocusModule) -> RegionFocusModule:
    """Make ``module`` ``model.focus_module`` (moved to the model's device and dtype), kept out of the model's
    own ``save_pretrained`` (it is saved in its own file by :func:`save_focus_module`)."""
    parameter = next(model.parameters())
    module.to(parameter.device, parameter.dtype).train(model.training)
    setattr(model, ATTRIBUTE, module)
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    model._keys_to_ignore_on_save = ignored | {f"{ATTRIBUTE}.{key}" for key in module.state_dict()}
    return module


def save_focus_module(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model.focus_module`` to ``folder/focus_module.safetensors``; returns the path."""
    module = getattr(model, ATTRIBUTE)
    text = module.config
    metadata = {"format": "pt", "focus_layer": str(module.focus_layer),
                "distill_layers": json.dumps(module.distill_layers),
                "num_hidden_layers": str(text.num_hidden_layers), "hidden_size": str(text.hidden_size)}
    state = {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}
    path = Path(folder) / FOCUS_MODULE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def read_metadata(folder: str | Path) -> dict:
    """The saved module's metadata: ``focus_layer`` (int), ``distill_layers`` (list), the LLM's shape."""
    path = Path(folder) / FOCUS_MODULE_FILE
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    try:
        return {"focus_layer": int(raw["focus_layer"]), "distill_layers": json.loads(raw["distill_layers"]),
                "num_hidden_layers": int(raw["num_hidden_layers"]), "hidden_size": int(raw["hidden_size"])}
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a focus module written by save_focus_module (metadata {raw}: {err})") from None


def load_focus_module(model: nn.Module, folder: str | Path) -> RegionFocusModule:
    """Build the module from ``model``'s language model, load ``folder/focus_module.safetensors`` into it
    (every key, shapes checked), attach it (:func:`attach_focus_module`) and return it."""
    meta = read_metadata(folder)
    decoder = model.model.language_model
    text = decoder.config
    if (meta["num_hidden_layers"], meta["hidden_size"]) != (text.num_hidden_layers, text.hidden_size):
        raise ValueError(f"{Path(folder) / FOCUS_MODULE_FILE} was trained for a language model with "
                         f"{meta['num_hidden_layers']} layers of width {meta['hidden_size']}, this one has "
                         f"{text.num_hidden_layers} of width {text.hidden_size}")
    module = RegionFocusModule.from_decoder(decoder, meta["focus_layer"], meta["distill_layers"])
    module.load_state_dict(load_file(str(Path(folder) / FOCUS_MODULE_FILE)), strict=True)
    return attach_focus_module(model, module)


def load_focus_weights(model: nn.Module, folder: str | Path) -> None:
    """Resume: the saved weights into the module already attached to ``model`` (training checkpoints)."""
    getattr(model, ATTRIBUTE).load_state_dict(load_file(str(Path(folder) / FOCUS_MODULE_FILE)), strict=True)


def focus_module_of(model: nn.Module) -> RegionFocusModule:
    """``model.focus_module``, else the one saved next to the checkpoint ``model`` was loaded from (attached)."""
    module = getattr(model, ATTRIBUTE, None)
    if module is not None:
        return module
    folder = Path(getattr(model, "name_or_path", "") or ".")
    if not (folder / FOCUS_MODULE_FILE).is_file():
        raise ValueError(f"focus='trained' needs a trained focus module, and {folder} has no {FOCUS_MODULE_FILE}: "
                         "train one with `python -m llava.train.train --train_focus_module` (README, Huge images), "
                         "or use focus='model' (the LLM's own layers, no training)")
    return load_focus_module(model, folder)


__all__ = ["ATTRIBUTE", "FOCUS_MODULE_FILE", "RegionFocusModule", "ScoringAttention", "ScoringLayer",
           "attach_focus_module", "focus_module_of", "load_focus_module", "load_focus_weights", "read_metadata",
           "save_focus_module"]
