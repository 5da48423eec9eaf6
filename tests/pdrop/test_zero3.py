"""PyramidDrop under DeepSpeed ZeRO-3: the next layer's projections are gathered when called."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed", reason="DeepSpeed is in the `train` extra")
pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_zero3_step_matches_plain_pytorch(tmp_path):
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")}
    out = subprocess.run([sys.executable, "-m", "tests.pdrop.zero3_step"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["partitioned"]
    assert result["zero3_losses"][0] == pytest.approx(result["plain_loss"], rel=1e-5)
    assert result["zero3_kept"] == result["plain_kept"]
    assert result["zero3_losses"][1] < result["zero3_losses"][0]  # the step trained the model
