"""The trainer encodes images itself, the same way for image and text-only batches (ZeRO-3, DDP)."""

import pytest
import torch

from llava.train.trainer import encode_images

from ..conftest import TINY_SCHEDULE, Sample, make_batch, tiny_model

TEXT_ONLY = [Sample(before=[5, 6, 7], after=[8, 9], has_image=False, answer=[30, 31])]
WITH_IMAGE = [Sample(before=[5], after=[8], answer=[30])]
DUMMY = {"pixel_values": torch.zeros(1, 3, 28, 28)}


def _module_order(model, batch) -> list[str]:
    """Names of the modules with parameters, in the order one training step calls them."""
    names = {module: name for name, module in model.named_modules() if any(True for _ in module.parameters(False))}
    order = []
    hooks = [m.register_forward_pre_hook(lambda m, *_: order.append(names[m])) for m in names]
    try:
        model(**encode_images(model, dict(batch), DUMMY)).loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    return order


@pytest.mark.parametrize("schedule", [TINY_SCHEDULE, None])
def test_text_only_batch_adds_nothing_but_reaches_the_projector(schedule):
    model = tiny_model(schedule).train()
    batch = make_batch(TEXT_ONLY, "right")
    plain = model(**batch).loss
    loss = model(**encode_images(model, dict(batch), DUMMY)).loss
    torch.testing.assert_close(loss, plain, rtol=0, atol=0)
    loss.backward()
    for param in model.model.multi_modal_projector.parameters():
        assert param.grad is not None and not param.grad.any()


@pytest.mark.parametrize("schedule", [TINY_SCHEDULE, None])
def test_image_batch_gives_the_models_own_loss(schedule):
    model = tiny_model(schedule).train()
    batch = make_batch(WITH_IMAGE, "right")
    torch.testing.assert_close(model(**encode_images(model, dict(batch), DUMMY)).loss, model(**batch).loss, rtol=0, atol=0)


@pytest.mark.parametrize("schedule", [TINY_SCHEDULE, None])
def test_every_batch_calls_the_same_modules_in_the_same_order(schedule):
    model = tiny_model(schedule).train()
    with_image = _module_order(model, make_batch(WITH_IMAGE, "right"))
    assert "model.vision_tower.embeddings.patch_embedding" in with_image
    assert _module_order(model, make_batch(TEXT_ONLY, "right")) == with_image
