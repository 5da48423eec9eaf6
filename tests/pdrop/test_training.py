"""Training with PyramidDrop: gradients reach the right places; checkpointing changes nothing."""

import pytest
import torch

from llava.model import enable_pdrop

from ..conftest import N_IMAGE, Sample, make_batch, tiny_model

SAMPLES = [
    Sample(before=[5, 6, 7], after=[8, 9, 10], answer=[30, 31, 32]),
    Sample(before=[], after=[], answer=[40, 41, 42, 43]),
    Sample(before=[20, 21], after=[22], has_image=False, answer=[50, 51]),
]


def _loss_and_grads(model, batch):
    model.train()
    captured = {}
    hook = model.model.multi_modal_projector.register_forward_hook(
        lambda module, args, output: captured.setdefault("features", output) .retain_grad())
    loss = model(**batch).loss
    loss.backward()
    hook.remove()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, captured["features"].grad


def test_backward_reaches_kept_image_tokens_vision_tower_and_projector():
    model = tiny_model()
    batch = make_batch(SAMPLES, "right")
    loss, grads, feature_grad = _loss_and_grads(model, batch)
    assert torch.isfinite(loss)
    assert grads["model.multi_modal_projector.linear_1.weight"].abs().sum() > 0
    assert grads["model.vision_tower.embeddings.patch_embedding.weight"].abs().sum() > 0
    assert grads["model.language_model.layers.3.mlp.down_proj.weight"].abs().sum() > 0
    final_kept = model.pdrop_trace.kept_image_positions(3)
    image_start = {0: 3, 1: 0}
    for b, start in image_start.items():
        slots = final_kept[b] - start  # positions inside the image's N_IMAGE features
        assert (feature_grad[b, slots].abs().sum(-1) > 0).all()
        assert len(slots) == N_IMAGE // 8


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    batch = make_batch(SAMPLES, "right")
    loss, grads, _ = _loss_and_grads(tiny_model(), batch)
    checkpointed = tiny_model()
    enable = getattr(checkpointed, "activation_checkpointing_enable", None)  # transformers >= 5.23 name
    enable() if enable else checkpointed.gradient_checkpointing_enable({"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in checkpointed.model.language_model.layers)
    loss_ckpt, grads_ckpt, _ = _loss_and_grads(checkpointed, batch)
    torch.testing.assert_close(loss_ckpt, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_ratio_one_loss_and_logits_equal_stock(attn):
    from llava.pdrop import PDropConfig

    batch = make_batch(SAMPLES, "right")
    model = tiny_model(PDropConfig([1, 2, 3], [1.0, 1.0, 1.0]), attn)
    stock = enable_pdrop(tiny_model(None, attn), None)
    with torch.no_grad():
        ours, theirs = model(**batch), stock(**batch)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=0, atol=0)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=0, atol=0)


def test_loss_is_computed_on_the_shortened_sequence():
    model = tiny_model()
    batch = make_batch(SAMPLES, "right")
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[1] == model.pdrop_trace.tokens_per_stage()[:, -1].max()
    assert out.logits.shape[1] < batch["input_ids"].shape[1]
