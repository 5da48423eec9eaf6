"""The packages import downwards only: pdrop <- model <- data, pyramid <- train, eval, bench.

The method (``llava/pdrop``) can be read and reused without the model classes, the model classes
without the data pipeline, and so on. Top-level helpers (``paths``, ``jsonl``, ``cli``, ...) may be
imported from anywhere.
"""

import ast
from pathlib import Path

LLAVA = Path(__file__).resolve().parents[1] / "llava"
LAYER = {"pdrop": 0, "model": 1, "data": 2, "pyramid": 2, "train": 3, "eval": 3, "bench": 3}


def imported_packages(path: Path) -> set[str]:
    """The ``llava`` packages a module imports (module-level and inside functions alike)."""
    depth = len(path.relative_to(LLAVA).parts)  # 2 for llava/pkg/mod.py, 3 for llava/pkg/sub/mod.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("llava."):
                found.add(node.module.split(".")[1])
            elif node.level == depth:  # from ..pkg import x (from llava/pkg/mod.py)
                found.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("llava.")}
    return found


def test_no_package_imports_a_package_above_it():
    upward = []
    for package, layer in LAYER.items():
        for path in (LLAVA / package).rglob("*.py"):
            for target in imported_packages(path) & set(LAYER):
                if LAYER[target] > layer or (LAYER[target] == layer and target != package):
                    upward.append(f"{path.relative_to(LLAVA.parent)} imports llava.{target}")
    assert not upward, upward


def test_the_scan_sees_imports():
    assert "model" in imported_packages(LLAVA / "train" / "trainer.py")
    assert "pdrop" in imported_packages(LLAVA / "model" / "pdrop_llava.py")
