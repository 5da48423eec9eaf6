"""PyramidDrop-LLaVA: progressive image-token dropping inside LLaVA's language model."""

__version__ = "0.1.0"
