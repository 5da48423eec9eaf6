"""LLaVA with PyramidDrop: transformers' LLaVA classes plus a stage-wise language model.

``PDropLlavaForConditionalGeneration`` (LLaVA-1.5) and ``PDropLlavaNextForConditionalGeneration``
(LLaVA-NeXT, any resolution) share one forward (:class:`PDropMixin`): the image tokens of a sample
form one pool, whatever they come from (several images, NeXT's base image, crops and newlines).

The vision tower, projector, embedding merge and LM head are transformers' own; only the language
model's forward is replaced by :func:`llava.pdrop.decoder.pdrop_decoder_forward`. The schedule lives
in ``config.pdrop`` (a plain dict), so ``save_pretrained`` / ``from_pretrained`` round-trip it and
the saved checkpoint is a standard ``llava`` checkpoint that stock transformers loads.

Outputs of a PyramidDrop forward cover the kept tokens only: ``logits`` is ``(B, m, V)`` with ``m``
the longest sample after the last drop. Inference left-aligns padding (``logits[:, -1]`` is every
sample's last token); training right-aligns it and computes the loss on the kept labels.
``model.pdrop_trace`` (a :class:`~llava.pdrop.decoder.DropTrace`) tells which input positions were
kept at every stage of the last prefill.
"""

from __future__ import annotations

import torch
from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast
from transformers.models.llava_next.modeling_llava_next import LlavaNextCausalLMOutputWithPast

from ..pdrop.cache import PDropCache
from ..pdrop.decoder import DropTrace, check_decoder_supported, pdrop_decoder_forward
from ..pdrop.schedule import PDropConfig

_KEEP_SAVED = object()


class PDropMixin:
    """What every PyramidDrop model class shares: schedule handling, generation checks, saving."""

    pdrop_config: PDropConfig | None
    pdrop_trace: DropTrace | None
    stock_class: type
    output_class: type

    def _init_pdrop(self) -> None:
        saved = getattr(self.config, "pdrop", None)
        self.pdrop_trace = None
        self.pdrop_config = None
        if saved:
            self.set_pdrop_config(PDropConfig.from_dict(saved))

    def set_pdrop_config(self, schedule: PDropConfig | dict | None) -> None:
        """Turn PyramidDrop on with ``schedule`` (validated against this model) or off with None."""
        if schedule is None:
            self.pdrop_config = None
            self.config.pdrop = None
            return
        if isinstance(schedule, dict):
            schedule = PDropConfig.from_dict(schedule)
        if not isinstance(schedule, PDropConfig):
            raise TypeError(f"expected a PDropConfig, a dict or None, got {type(schedule).__name__}")
        decoder = self.model.language_model
        schedule.validate_for(decoder.config.num_hidden_layers)
        check_decoder_supported(decoder)
        self.pdrop_config = schedule
        self.config.pdrop = schedule.to_dict()

    @classmethod
    def from_pretrained(cls, *args, pdrop_config=_KEEP_SAVED, **kwargs):
        """Load a checkpoint; its saved schedule is used unless ``pdrop_config`` is given (None turns it off)."""
        model = super().from_pretrained(*args, **kwargs)
        if pdrop_config is not _KEEP_SAVED:
            model.set_pdrop_config(pdrop_config)
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as a standard checkpoint: ``architectures`` names the stock class, ``pdrop`` the schedule."""
        super().save_pretrained(save_directory, *args, **kwargs)
        self.config.architectures = [self.stock_class.__name__]
        self.config.save_pretrained(save_directory)

    def generate(self, *args, **kwargs):
        if self.pdrop_config is not None:
            _check_generation_supported(self, kwargs)
        return super().generate(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer=None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pdrop_query_mask: torch.Tensor | None = None,
        dummy_image: dict[str, torch.Tensor] | None = None,
        **kwargs,
    ) -> LlavaCausalLMOutputWithPast:
        """Stock signature plus two optional inputs.

        ``pdrop_query_mask`` ``(B, n)`` bool: explicit query tokens for the ranking.
        ``dummy_image``: for a training batch without images, ``{"pixel_values", "image_sizes"?}`` of one
        image that runs through the vision tower and projector with zero weight in the output. Every
        step then calls the same modules in the same order on every rank (ZeRO-3 gathers parameters
        per module call) and the projector always gets a (zero) gradient (DDP). LLaVA's zero image.
        """
        if dummy_image is not None:
            inputs_embeds, image_mask, image_features = merge_image_features(
                self, input_ids, inputs_embeds, pixel_values, vision_feature_layer, vision_feature_select_strategy,
                image_sizes, dummy_image=dummy_image)
            input_ids = None
        if self.pdrop_config is None:
            if pdrop_query_mask is not None:
                raise ValueError("pdrop_query_mask was given but PyramidDrop is off for this model")
            if self.training and pixel_values is not None:
                # same module order as a dummy-image batch (embeddings, vision, projector, then the
                # language model): stock LLaVA would enter its inner model first, and ZeRO-3 ranks
                # that disagree on the order stop with "disagreement on list contents"
                inputs_embeds, _, _ = merge_image_features(
                    self, input_ids, inputs_embeds, pixel_values, vision_feature_layer, vision_feature_select_strategy,
                    image_sizes)
                input_ids, pixel_values = None, None
            return super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                position_ids=position_ids, past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=vision_feature_select_strategy,
                labels=labels, logits_to_keep=logits_to_keep, image_sizes=image_sizes, use_cache=use_cache, **kwargs,
            )
        if dummy_image is None:
            inputs_embeds, image_mask, image_features = merge_image_features(
                self, input_ids, inputs_embeds, pixel_values, vision_feature_layer, vision_feature_select_strategy,
                image_sizes)
        out = self._run_pdrop_language_model(inputs_embeds, image_mask, attention_mask, position_ids, past_key_values,
                                             use_cache, labels, pdrop_query_mask, kwargs)
        return _lm_head_and_loss(self, out, labels, logits_to_keep, image_features, kwargs)

    def _run_pdrop_language_model(self, inputs_embeds, image_mask, attention_mask, position_ids, past_key_values,
                                  use_cache, labels, pdrop_query_mask, kwargs):
        for flag in ("output_attentions", "output_hidden_states"):
            if kwargs.pop(flag, None):
                raise ValueError(f"{flag}=True is not supported with PyramidDrop (layers see different lengths)")
        if use_cache is None:
            use_cache = self.config.get_text_config().use_cache and not (self.training and labels is not None)
        out = pdrop_decoder_forward(
            self.model.language_model, self.pdrop_config, inputs_embeds, image_mask,
            attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
            use_cache=use_cache, labels=labels, query_mask=pdrop_query_mask, **kwargs,
        )
        if out.trace is not None:
            self.pdrop_trace = out.trace
        return out


class PDropLlavaForConditionalGeneration(PDropMixin, LlavaForConditionalGeneration):
    """``LlavaForConditionalGeneration`` whose language model runs PyramidDrop when ``config.pdrop`` is set.

    Load a released checkpoint (its saved schedule applies) or override it::

        model = PDropLlavaForConditionalGeneration.from_pretrained(
            "llava-hf/llava-1.5-7b-hf", pdrop_config=PDropConfig([8, 16, 24], [0.5, 0.25, 0.125]))
    """

    stock_class = LlavaForConditionalGeneration
    output_class = LlavaCausalLMOutputWithPast

    def __init__(self, config):
        super().__init__(config)
        self._init_pdrop()


class PDropLlavaNextForConditionalGeneration(PDropMixin, LlavaNextForConditionalGeneration):
    """``LlavaNextForConditionalGeneration`` (any-resolution LLaVA-NeXT) with PyramidDrop.

    A sample's pool is all its image tokens: base image, any-resolution crops and newline tokens;
    samples with different crop counts have different N0 and are cut on their own.
    """

    stock_class = LlavaNextForConditionalGeneration
    output_class = LlavaNextCausalLMOutputWithPast

    def __init__(self, config):
        super().__init__(config)
        self._init_pdrop()


def merge_image_features(model, input_ids, inputs_embeds, pixel_values, vision_feature_layer,
                         vision_feature_select_strategy, image_sizes, dummy_image=None):
    """Embed the text and scatter the projected image features into the image-token slots.

    Returns ``inputs_embeds`` ``(B, n, d)``, ``image_mask`` ``(B, n)`` bool and the features
    ``(num_image_tokens, d)`` (None without images). Raises if the counts differ, stating both.
    With ``dummy_image`` (and no ``pixel_values``), its features are added with weight zero.
    """
    llava = model.model
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if inputs_embeds is None:
        inputs_embeds = llava.get_input_embeddings()(input_ids)
        image_mask = input_ids == model.config.image_token_id
    else:
        image_token = llava.get_input_embeddings()(torch.tensor(model.config.image_token_id, device=inputs_embeds.device))
        image_mask = (inputs_embeds == image_token).all(dim=-1)
    if dummy_image is not None:
        if pixel_values is not None or bool(image_mask.any()):
            raise ValueError("dummy_image is only for batches without images, but this batch has images")
        features = _image_features(model, dummy_image["pixel_values"], vision_feature_layer,
                                   vision_feature_select_strategy, dummy_image.get("image_sizes"))
        return inputs_embeds + 0.0 * features.sum().to(inputs_embeds.dtype), image_mask, None
    if pixel_values is None or pixel_values.shape[0] == 0:
        return inputs_embeds, image_mask, None
    if isinstance(model, LlavaNextForConditionalGeneration):
        check_image_sizes(pixel_values, image_sizes)
    features = _image_features(model, pixel_values, vision_feature_layer, vision_feature_select_strategy, image_sizes)
    features = features.to(inputs_embeds.device, inputs_embeds.dtype)
    check_image_token_count(int(image_mask.sum()), features.shape[0], num_images=len(image_sizes) if image_sizes is not None
                            else pixel_values.shape[0])
    inputs_embeds = inputs_embeds.masked_scatter(image_mask[..., None], features)
    return inputs_embeds, image_mask, features


def _image_features(model, pixel_values, vision_feature_layer, vision_feature_select_strategy, image_sizes):
    """``(num_image_tokens, d)``: the projected features of all images, in order."""
    features = model.model.get_image_features(
        pixel_values=pixel_values, vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy, image_sizes=image_sizes, return_dict=True,
    ).pooler_output
    return torch.cat(list(features), dim=0)


def check_image_token_count(num_tokens: int, num_features: int, num_images: int) -> None:
    if num_tokens != num_features:
        raise ValueError(
            f"image-token count mismatch: the input holds {num_tokens} image tokens but the {num_images} image(s) "
            f"give {num_features} feature vectors (the processor must expand each <image> to one token per "
            "feature, and every <image> needs its image)"
        )


def check_image_sizes(pixel_values: torch.Tensor, image_sizes: torch.Tensor | None) -> None:
    """LLaVA-NeXT needs one ``(height, width)`` per image to unpad its crops."""
    if image_sizes is None:
        raise ValueError("LLaVA-NeXT needs image_sizes (num_images, 2) with pixel_values: the processor returns it")
    sizes = torch.as_tensor(image_sizes)
    if sizes.dim() != 2 or sizes.shape[1] != 2:
        raise ValueError(f"image_sizes must have shape (num_images, 2), got {tuple(sizes.shape)}")
    if pixel_values.dim() == 5 and sizes.shape[0] != pixel_values.shape[0]:
        raise ValueError(f"image_sizes has {sizes.shape[0]} rows but pixel_values holds {pixel_values.shape[0]} images")
    if bool((sizes <= 0).any()):
        raise ValueError(f"image_sizes must be positive (height, width) pairs, got {sizes.tolist()}")


def _lm_head_and_loss(model, out, labels, logits_to_keep, image_features, kwargs):
    hidden = out.last_hidden_state
    if isinstance(logits_to_keep, int) and logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    elif isinstance(logits_to_keep, torch.Tensor):
        hidden = hidden[:, logits_to_keep]
    logits = model.lm_head(hidden)
    loss = None
    if labels is not None:
        vocab_size = model.config.get_text_config().vocab_size
        loss = model.loss_function(logits=logits, labels=out.labels, vocab_size=vocab_size, **kwargs)
    return model.output_class(
        loss=loss, logits=logits, past_key_values=out.past_key_values, image_hidden_states=image_features,
    )


def _check_generation_supported(model, kwargs) -> None:
    config = kwargs.get("generation_config") or model.generation_config
    cache_impl = kwargs.get("cache_implementation", getattr(config, "cache_implementation", None))
    if cache_impl not in (None, "dynamic"):
        raise ValueError(
            f"cache_implementation={cache_impl!r} is not supported with PyramidDrop: later stages hold fewer "
            "tokens than a fixed-size cache expects; use the default dynamic cache"
        )
    cache = kwargs.get("past_key_values")
    if cache is not None and not isinstance(cache, PDropCache):
        if cache.get_seq_length() > 0 or type(cache).__name__ != "DynamicCache":
            raise ValueError(f"past_key_values of type {type(cache).__name__} is not supported with PyramidDrop; "
                             "pass none (or an empty PDropCache)")
    for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit"):
        if kwargs.get(name) is not None or getattr(config, name, None) is not None:
            raise ValueError(f"{name} (assisted decoding) is not supported with PyramidDrop: it crops the cache")
