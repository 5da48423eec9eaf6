"""Run the coarse-to-fine walk on one image file and print the peak RSS growth it caused (a subprocess).

The growth is the peak resident memory during the walk (``VmHWM``, reset just before it) minus the
resident memory before it, so transient peaks of model building and warm-up do not hide it.

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
    before = _reset_peak()
    result = coarse_to_fine(model, path, [1, 5], [8, 9], config)
    after = _status_kib("VmHWM") if before is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = before if before is not None else 0
    print(json.dumps({"peak_growth_mb": (after - before) / 1024, "levels": len(result.levels),
                      "visited": len(result.traces), "tiles": result.tiles_per_level, "stop": result.stop_reason}))


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int | None:
    """Current RSS (KiB) after resetting the peak (Linux: ``5`` to clear_refs); None where that is not possible,
    then the growth is measured from process start (``ru_maxrss``), an upper bound."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


def _warm_up_image():
    from PIL import Image

    return Image.new("RGB", (300, 200), (90, 120, 60))


if __name__ == "__main__":
    main(sys.argv[1])
