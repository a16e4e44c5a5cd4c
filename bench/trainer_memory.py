"""Peak memory of one bench.trainer side, from loading its model to the end of its training.

- On CUDA: `torch.cuda.max_memory_allocated`, its peak reset before the side starts (after the previous side's
  model is collected and the cache emptied): the most tensor memory the side held at once, weights included.
- On CPU: the growth of the process's peak resident set (VmHWM) over the side, its high-water mark reset before it
  through /proc/self/clear_refs, after garbage collection and a malloc_trim so that memory freed by the side before
  is given back to the system and not silently reused. It is the side's weights, activations, optimizer state and
  whatever its libraries allocate besides, less what they reuse of memory the process already held: an honest
  figure of how much more memory the process needed, coarser than the GPU's (page-granular, allocator-dependent).
  Where /proc/self/clear_refs cannot be written (not Linux) there is no CPU figure: None, printed as "n/a".
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from collections.abc import Iterator
from pathlib import Path

import torch

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


class PeakMemory:
    """What `measuring` saw: `bytes`, or None where this machine cannot measure it; `kind` says which figure."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.kind = "max_memory_allocated" if cuda else "peak RSS growth"
        self.bytes: int | None = None


@contextlib.contextmanager
def measuring(cuda: bool) -> Iterator[PeakMemory]:
    """The peak memory of the block's run (see the module docstring)."""
    peak = PeakMemory(cuda)
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        yield peak
        torch.cuda.synchronize()
        peak.bytes = torch.cuda.max_memory_allocated()
        return
    _trim()
    start = _reset_high_water_mark()
    yield peak
    if start is not None:
        peak.bytes = max(0, _status_kib("VmHWM") * 1024 - start)


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def _reset_high_water_mark() -> int | None:
    """The resident bytes now, with the peak reset to them; None where the kernel offers no reset."""
    try:
        CLEAR_REFS.write_text("5")  # "5": reset the peak resident set size to the current one (Linux 4.0+)
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"no {field} in {STATUS}")


def _trim() -> None:
    """Give the C heap's free memory back to the system (glibc), so the next side's growth is its own."""
    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)
