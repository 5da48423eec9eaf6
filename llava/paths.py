"""Where the repository's configs live (``configs/`` next to the package, or ``$PDROP_CONFIGS_DIR``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIGS_DIR = Path(os.environ.get("PDROP_CONFIGS_DIR", Path(__file__).resolve().parents[1] / "configs"))


def _load_named(kind: str, name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIGS_DIR / kind / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS_DIR / kind).glob("*.json"))
        raise FileNotFoundError(f"no {kind[:-1]} config {name_or_path!r} (looked at {path}); known: {known}")
    return json.loads(path.read_text())


def load_model_preset(name_or_path: str) -> dict[str, Any]:
    """A model preset from ``configs/models/NAME.json`` (or a JSON path)."""
    return _load_named("models", name_or_path)


def load_schedule(name_or_path: str):
    """A schedule from ``configs/schedules/NAME.json`` (or a JSON path) as a ``PDropConfig``."""
    from .pdrop.schedule import PDropConfig

    data = dict(_load_named("schedules", name_or_path))
    data.pop("description", None)
    return PDropConfig.from_dict(data)


def load_pyramid_config(name_or_path: str):
    """A coarse-to-fine config from ``configs/pyramid/NAME.json`` (or a JSON path) as a ``CoarseToFineConfig``."""
    from .pyramid.config import CoarseToFineConfig

    try:
        data = dict(_load_named("pyramid", name_or_path))
    except FileNotFoundError as err:
        raise FileNotFoundError(str(err).replace("no pyrami config", "no pyramid config")) from None
    data.pop("description", None)
    return CoarseToFineConfig.from_dict(data)


# what the training code writes next to a saved model, and what llava.release reads back
TRAINING_ARGS_FILE = "llava_training_args.json"
TRAINER_STATE_FILE = "trainer_state.json"  # HF's name; next to the final model too (steps and epochs that ran)
