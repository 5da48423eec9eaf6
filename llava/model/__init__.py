"""Model classes: transformers' LLaVA classes with the PyramidDrop language-model forward, and ``enable_pdrop``."""

from .enable import enable_pdrop
from .pdrop_llava import PDropLlavaForConditionalGeneration, PDropLlavaNextForConditionalGeneration

__all__ = ["PDropLlavaForConditionalGeneration", "PDropLlavaNextForConditionalGeneration", "enable_pdrop"]
