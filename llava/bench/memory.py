"""Peak memory of one piece of work, measured in a forked process (Linux).

``peak_rss_growth_mb(fn)`` forks; the child runs ``fn()`` once to warm up (a new process pays one-time
initialisation on its first torch operations, ~50 MB here, which is not the work's), returns the heap's
free pages (glibc ``malloc_trim``: the measured run cannot reuse pages the warm-up freed), resets its
resident-memory high-water mark (``5`` into ``/proc/self/clear_refs``), runs ``fn()`` again and reports
``VmHWM - VmRSS`` measured just before: the memory the work needs on top of what the process held (the
loaded model, shared copy-on-write with the parent). Repeated measurements agree within a few MB. None
where this cannot be measured (no ``fork``, no ``/proc``, or the work failed in the child).

Example::

    mb = peak_rss_growth_mb(lambda: full_grid(model, ["scene.jpg"], config))
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
from pathlib import Path
from typing import Callable

PROC = Path("/proc/self")


def _status_kib(field: str) -> int:
    for line in (PROC / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _measure(fn: Callable[[], object]) -> float:
    fn()  # warm-up: the first run of a new process
    _trim_heap()
    (PROC / "clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def _trim_heap() -> None:
    """Give the heap's free pages back (glibc ``malloc_trim``), so the work cannot reuse resident pages the
    parent had freed: its growth then counts what it needs, not what happened to be left over."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_growth_mb(fn: Callable[[], object], timeout: float = 900.0) -> float | None:
    """Peak resident-memory growth in MB while ``fn()`` runs (a second time) in a forked child (module docstring).

    The child runs torch on one thread: OpenMP's thread pool does not survive ``fork`` (a parallel region
    in the child can wait forever for the parent's threads). A child still running after ``timeout``
    seconds is killed (None).
    """
    if not hasattr(os, "fork") or not (PROC / "clear_refs").exists():
        return None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, leave without running the parent's exit handlers
        os.close(read)
        try:
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(1)
            os.write(write, f"{_measure(fn):.3f}".encode())
        except BaseException:  # noqa: BLE001 - the parent reads nothing and reports None
            pass
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], timeout)
        text = os.read(read, 64).decode() if ready else ""
    finally:
        os.close(read)
        if not text:
            _kill(pid)
        os.waitpid(pid, 0)
    return float(text) if text else None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


__all__ = ["peak_rss_growth_mb"]
