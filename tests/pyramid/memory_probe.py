"""Run the coarse-to-fine walk on one image file and print the peak RSS growth it caused (a subprocess).

    python -m tests.pyramid.memory_probe IMAGE  ->  {"peak_growth_mb": ..., "levels": ..., "tiles": [...]}
"""

from __future__ import annotations

import json
import resource
import sys

import torch

from llava.paths import load_pyramid_config
from llava.pyramid import coarse_to_fine
from tests.conftest import preset_model


def main(path: str) -> None:
    torch.set_num_threads(1)
    model = preset_model("tiny-llava-next", schedule=None)
    config = load_pyramid_config("tiny")
    coarse_to_fine(model, _warm_up_image(), [1, 5], [8, 9], config)  # allocator and kernels warmed up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = coarse_to_fine(model, path, [1, 5], [8, 9], config)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mb": (after - before) / 1024, "levels": len(result.levels),
                      "visited": len(result.traces), "tiles": result.tiles_per_level, "stop": result.stop_reason}))


def _warm_up_image():
    from PIL import Image

    return Image.new("RGB", (300, 200), (90, 120, 60))


if __name__ == "__main__":
    main(sys.argv[1])
