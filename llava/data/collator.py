"""Batching: pad token ids and labels to the longest sample, gather the images of the batch in order.

Example::

    collator = DataCollatorForSupervisedDataset(pad_token_id=tokenizer.pad_token_id)
    batch = collator([dataset[0], dataset[1]])
    ids = batch.pop("ids")  # sample ids, for logging only
    loss = model(**batch).loss
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from .templates import IGNORE_INDEX


class DataCollatorForSupervisedDataset:
    """Collates :class:`~llava.data.dataset.LazySupervisedDataset` samples (right padding, as training needs).

    Returns ``input_ids`` ``(B, n_max)`` padded with ``pad_token_id``, ``labels`` ``(B, n_max)``
    padded with -100, ``attention_mask`` ``(B, n_max)`` long (1 on real tokens), ``ids`` (list of
    sample ids; pop it before calling the model) and, when some sample has images,
    ``pixel_values``: the images of all samples concatenated in sample order, ``(K, 3, H, W)`` or
    for anyres ``(K, P_max, 3, H, W)`` with the crop dimension zero-padded to the batch maximum, and
    (anyres) ``image_sizes`` ``(K, 2)``. Text-only samples add no pixels; a batch without images
    has no pixel keys.
    """

    def __init__(self, pad_token_id: int):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: give the tokenizer a pad token "
                             "(llava.model.processor.add_image_token sets one)")
        self.pad_token_id = int(pad_token_id)

    def __call__(self, instances: list[dict]) -> dict:
        input_ids = pad_sequence([x["input_ids"] for x in instances], batch_first=True, padding_value=self.pad_token_id)
        labels = pad_sequence([x["labels"] for x in instances], batch_first=True, padding_value=IGNORE_INDEX)
        lengths = torch.tensor([len(x["input_ids"]) for x in instances])
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                 "ids": [x.get("id") for x in instances]}
        with_images = [x for x in instances if "pixel_values" in x]
        if with_images:
            batch["pixel_values"] = concat_pixel_values([x["pixel_values"] for x in with_images])
            sizes = [x["image_sizes"] for x in with_images if "image_sizes" in x]
            if sizes:
                if len(sizes) != len(with_images):
                    raise ValueError("some samples of the batch have image_sizes and some do not: mixed anyres and "
                                     "fixed-size images cannot form one batch")
                batch["image_sizes"] = torch.cat(sizes, dim=0)
        return batch


def concat_pixel_values(pixel_values: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-sample pixel values along images; 5-D (anyres) ones are zero-padded on the crop dim."""
    if pixel_values[0].dim() == 5:
        max_patches = max(p.shape[1] for p in pixel_values)
        pixel_values = [torch.nn.functional.pad(p, (0, 0, 0, 0, 0, 0, 0, max_patches - p.shape[1]))
                        for p in pixel_values]
    return torch.cat(pixel_values, dim=0)
