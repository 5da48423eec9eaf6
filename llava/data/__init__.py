"""Data: conversation templates, the LLaVA JSON dataset, image preprocessing, collator and sampler.

- :mod:`~llava.model.processor` (re-exported here): the ``<image>`` token, the LLaVA / LLaVA-NeXT processor,
  image-token counts; it belongs to the model, which assembly builds with it.
- :mod:`~llava.data.templates`: conversation templates -> token ids, labels and image spans; inference prompts.
- :mod:`~llava.data.images`: image loading with clear errors, square padding, pixel values per sample.
- :mod:`~llava.data.dataset`: the records index and :class:`LazySupervisedDataset`.
- :mod:`~llava.data.collator`, :mod:`~llava.data.sampler`: batches and the modality-grouped order.
- :mod:`~llava.data.synthetic`: the tiny offline assets (imported on demand).
"""

from .collator import DataCollatorForSupervisedDataset
from .dataset import LazySupervisedDataset, load_llava_records
from .images import ImageBatch, ImageError, ImagePreprocessor, expand_to_square, load_image
from ..model.processor import add_image_token, build_processor, num_image_tokens
from .sampler import ModalityLengthGroupedSampler
from .templates import TEMPLATES, TokenizedConversation, build_prompt, tokenize_conversation

__all__ = [
    "DataCollatorForSupervisedDataset",
    "ImageBatch",
    "ImageError",
    "ImagePreprocessor",
    "LazySupervisedDataset",
    "ModalityLengthGroupedSampler",
    "TEMPLATES",
    "TokenizedConversation",
    "add_image_token",
    "build_processor",
    "build_prompt",
    "expand_to_square",
    "load_image",
    "load_llava_records",
    "num_image_tokens",
    "tokenize_conversation",
]
