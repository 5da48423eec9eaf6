"""One PyramidDrop training step under DeepSpeed ZeRO-3 (run by test_zero3.py in its own process).

Prints the plain-PyTorch loss, the ZeRO-3 loss and the kept positions of both as JSON.
"""

import json

import deepspeed
import torch

from tests.conftest import Sample, make_batch, tiny_model

SAMPLES = [
    Sample(before=[5, 6, 7], after=[8, 9, 10], answer=[30, 31, 32]),
    Sample(before=[], after=[], answer=[40, 41, 42, 43]),
]


def main() -> None:
    batch = make_batch(SAMPLES, "right")
    plain = tiny_model()
    plain_loss = plain(**batch).loss.item()
    plain_kept = [[t.tolist() for t in plain.pdrop_trace.kept_image_positions(s)] for s in range(4)]

    model = tiny_model()
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
              "zero_allow_untested_optimizer": True,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    partitioned = all(p.numel() == 0 or hasattr(p, "ds_id") for p in model.parameters())
    engine.train()
    losses, kept = [], None
    for _ in range(2):
        loss = engine(**batch).loss
        kept = kept or [[t.tolist() for t in model.pdrop_trace.kept_image_positions(s)] for s in range(4)]
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    print(json.dumps({"plain_loss": plain_loss, "zero3_losses": losses, "plain_kept": plain_kept,
                      "zero3_kept": kept, "partitioned": partitioned}))


if __name__ == "__main__":
    main()
