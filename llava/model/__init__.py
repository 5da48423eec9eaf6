"""Model classes: transformers' LLaVA classes with the PyramidDrop language-model forward."""

from .pdrop_llava import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

__all__ = ["PDropLlavaForConditionalGeneration", "PDropLlavaNextForConditionalGeneration"]
