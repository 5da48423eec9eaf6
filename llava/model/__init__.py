"""Model classes: transformers' LLaVA classes with the PyramidDrop language-model forward."""

from .pdrop_llava import PDropLlavaForConditionalGeneration

__all__ = ["PDropLlavaForConditionalGeneration"]
