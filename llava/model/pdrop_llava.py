"""LLaVA with PyramidDrop: transformers' LLaVA classes plus a stage-wise language model.

``PDropLlavaForConditionalGeneration`` (LLaVA-1.5) and ``PDropLlavaNextForConditionalGeneration``
(LLaVA-NeXT, any resolution) share one forward (:class:`PDropMixin`): the image tokens of a sample
form one pool, whatever they come from (several images, NeXT's base image, crops and newlines).

The forward has the stock signature plus ``pdrop_query_mask``. With the schedule off it *is* the
stock forward. With it on, the embeddings are merged with transformers' own helpers
(``get_input_embeddings``, ``get_image_features``, ``get_placeholder_mask``) and the language model
runs :func:`llava.pdrop.decoder.pdrop_decoder_forward` instead of its own forward; the LM head and
loss are the stock ones. The schedule lives in ``config.pdrop`` (a plain dict), so
``save_pretrained`` / ``from_pretrained`` round-trip it and the saved checkpoint is a standard
``llava`` checkpoint that stock transformers loads.

Outputs of a PyramidDrop forward cover the kept tokens only: ``logits`` is ``(B, m, V)`` with ``m``
the longest sample after the last drop. Inference left-aligns padding (``logits[:, -1]`` is every
sample's last token); training right-aligns it and computes the loss on the kept labels.
``model.pdrop_trace`` (a :class:`~llava.pdrop.decoder.DropTrace`) tells which input positions were
kept at every stage of the last prefill (``pdrop_record_trace = False`` skips it, as training does).
``pdrop_compile_ranking = True`` scores with the compiled ranking
(:func:`llava.pdrop.ranking.compiled_query_attention`; off by default, not under ZeRO-3).
"""

from __future__ import annotations

import contextvars

import torch
from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast
from transformers.models.llava_next.modeling_llava_next import LlavaNextCausalLMOutputWithPast

from ..pdrop.cache import PDropCache
from ..pdrop.decoder import DropTrace, pdrop_decoder_forward
from ..pdrop.schedule import PDropConfig
from ..pdrop.support import check_decoder_supported
from .inputs import check_prefill_inputs, check_pixel_values, check_image_token_count

_KEEP_SAVED = object()
_LOADING = contextvars.ContextVar("pdrop_loading", default=False)  # from_pretrained defers a bad saved schedule


class PDropMixin:
    """What every PyramidDrop model class shares: schedule handling, the forward, generation, saving."""

    pdrop_config: PDropConfig | None
    pdrop_trace: DropTrace | None
    pdrop_record_trace: bool = True
    pdrop_compile_ranking: bool = False
    stock_class: type
    output_class: type

    # ------------------------------------------------------------------ schedule
    def _init_pdrop(self) -> None:
        self.pdrop_trace, self.pdrop_config, self._saved_pdrop_error = None, None, None
        saved = getattr(self.config, "pdrop", None)
        if saved is None:
            return
        try:
            self.set_pdrop_config(PDropConfig.from_dict(saved, where="the checkpoint's config.pdrop"))
        except ValueError as err:
            if not _LOADING.get():
                raise
            self._saved_pdrop_error = err  # from_pretrained raises it unless a schedule is passed

    def set_pdrop_config(self, schedule: PDropConfig | dict | None) -> None:
        """Turn PyramidDrop on with ``schedule`` (validated against this model) or off with None."""
        self._saved_pdrop_error = None
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
        """Load a checkpoint; its saved schedule is used unless ``pdrop_config`` is given (None turns it off).

        A saved schedule that is not valid is named in the error, and ``pdrop_config=`` (None included)
        still loads the weights.
        """
        token = _LOADING.set(True)
        try:
            model = super().from_pretrained(*args, **kwargs)
        finally:
            _LOADING.reset(token)
        if pdrop_config is not _KEEP_SAVED:
            model.set_pdrop_config(pdrop_config)
        elif model._saved_pdrop_error is not None:
            raise ValueError(f"{model._saved_pdrop_error}; load with pdrop_config=None (command line: --no_pdrop) or "
                             "pass a schedule to override it") from None
        return model

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, push_to_hub: bool = False, **kwargs):
        """Save as a standard checkpoint: ``architectures`` names the stock class, ``pdrop`` the schedule.

        ``push_to_hub=True`` uploads what was saved here (``repo_id``, ``commit_message``, ``private``,
        ``token``, ``create_pr`` as in transformers), with the stock class named in the config.
        """
        hub = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "private", "create_pr") if key in kwargs}
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if not self.should_save_on_this_rank(is_main_process):
            return
        self.config.architectures = [self.stock_class.__name__]
        self.config.save_pretrained(save_directory)
        if push_to_hub:
            repo_id = hub.pop("repo_id", str(save_directory).rstrip("/").split("/")[-1])
            self.push_to_hub(repo_id, token=kwargs.get("token"), **hub)

    # ------------------------------------------------------------------ forward
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
        pdrop_query_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> LlavaCausalLMOutputWithPast:
        """The stock forward, plus ``pdrop_query_mask`` ``(B, n)`` bool: explicit query tokens for the ranking."""
        check_pixel_values(self, pixel_values, image_sizes)
        image_tokens = None
        if past_key_values is None or past_key_values.get_seq_length() == 0:
            image_tokens = check_prefill_inputs(self, input_ids, attention_mask, pixel_values,
                                                kwargs.get("mm_encoder_outputs"))
        if self.pdrop_config is None:
            if pdrop_query_mask is not None:
                raise ValueError("pdrop_query_mask was given but PyramidDrop is off for this model")
            return super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                position_ids=position_ids, past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=vision_feature_select_strategy,
                labels=labels, logits_to_keep=logits_to_keep, image_sizes=image_sizes, **kwargs,
            )
        inputs_embeds, image_mask, image_features = self.merge_inputs(
            input_ids, inputs_embeds, pixel_values, vision_feature_layer, vision_feature_select_strategy, image_sizes,
            kwargs.pop("mm_encoder_outputs", None), image_tokens)
        for flag in ("output_attentions", "output_hidden_states"):
            if kwargs.pop(flag, None):
                raise ValueError(f"{flag}=True is not supported with PyramidDrop (layers see different lengths)")
        use_cache = kwargs.pop("use_cache", None)
        if use_cache is None:
            use_cache = self.config.get_text_config().use_cache and not (self.training and labels is not None)
        out = pdrop_decoder_forward(
            self.model.language_model, self.pdrop_config, inputs_embeds, image_mask, attention_mask=attention_mask,
            position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache, labels=labels,
            query_mask=pdrop_query_mask, trace=self.pdrop_record_trace, compile_ranking=self.pdrop_compile_ranking,
            **kwargs)
        if out.trace is not None:
            self.pdrop_trace = out.trace
        return self._head_and_loss(out, labels, logits_to_keep, image_features, kwargs)

    def merge_inputs(self, input_ids, inputs_embeds, pixel_values, vision_feature_layer, vision_feature_select_strategy,
                     image_sizes, mm_encoder_outputs=None, image_tokens: int | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Embed the text and put the image features in the image-token slots, as transformers' LLaVA does.

        Returns ``inputs_embeds`` ``(B, n, d)``, ``image_mask`` ``(B, n)`` bool and the features
        ``(num_image_tokens, d)`` (None without images). ``mm_encoder_outputs={"image": ...}`` passes
        features already computed (transformers' argument; the trainer uses it). ``image_tokens``: the
        ``<image>`` tokens in ``input_ids`` if the caller has read them (else they are read here); the
        count is checked against the features here, so transformers' own check (two more device reads
        on a GPU) is not run.
        """
        llava = self.model
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = llava.get_input_embeddings()(input_ids)
        encoded = (mm_encoder_outputs or {}).get("image")
        if encoded is None and pixel_values is not None and pixel_values.shape[0] > 0:
            encoded = llava.get_image_features(
                pixel_values=pixel_values, vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy, image_sizes=image_sizes, return_dict=True)
        if encoded is None:  # no images: the placeholders (if any) still mark the pool, as transformers finds them
            if input_ids is not None:
                return inputs_embeds, input_ids == self.config.image_token_id, None
            image_token = llava.get_input_embeddings()(torch.tensor(self.config.image_token_id, device=inputs_embeds.device))
            return inputs_embeds, (inputs_embeds == image_token).all(dim=-1), None
        features = torch.cat(list(encoded.pooler_output), dim=0).to(inputs_embeds.device, inputs_embeds.dtype)
        if input_ids is None:  # embeddings given: transformers finds (and checks) the placeholders
            placeholder = llava.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=features)
            return inputs_embeds.masked_scatter(placeholder, features), placeholder[..., 0], features
        image_token_mask = input_ids == self.config.image_token_id
        if image_tokens is None:
            image_tokens = int(image_token_mask.sum())
        num_images = len(image_sizes) if image_sizes is not None else len(encoded.pooler_output)
        check_image_token_count(image_tokens, features.shape[0], num_images)
        placeholder = image_token_mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(placeholder, features), placeholder[..., 0], features

    def _head_and_loss(self, out, labels, logits_to_keep, image_features, kwargs):
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            vocab_size = self.config.get_text_config().vocab_size
            loss = self.loss_function(logits=logits, labels=out.labels, vocab_size=vocab_size, **kwargs)
        return self.output_class(
            loss=loss, logits=logits, past_key_values=out.past_key_values, image_hidden_states=image_features,
        )

    # ------------------------------------------------------------------ generation
    def generate(self, *args, **kwargs):
        """Stock ``generate``; with PyramidDrop on, the KV cache is a :class:`PDropCache` made here."""
        if self.pdrop_config is not None:
            _check_generation_supported(self, kwargs)
            if kwargs.get("past_key_values") is None and kwargs.get("use_cache", True):
                kwargs["past_key_values"] = PDropCache(config=self.config.get_text_config())
        return super().generate(*args, **kwargs)


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
        kwargs.pop("past_key_values")  # an empty plain cache: generate gets a PDropCache instead
    for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit"):
        if kwargs.get(name) is not None or getattr(config, name, None) is not None:
            raise ValueError(f"{name} (assisted decoding) is not supported with PyramidDrop: it crops the cache")
