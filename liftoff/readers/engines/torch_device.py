"""Device, dtype and thread choices for torch engines, and the one thread each engine runs its torch work on.

Torch work never runs on the event loop: the reader must keep heartbeating and flushing replies while a batch
computes. Each engine owns one `TorchThread` (a single worker, so the model is never entered concurrently).

dtype: the reader's `dtype` setting is the one source (`pick_dtype`); the names are
liftoff.core.reader_config.DTYPE_NAMES, checked when the settings load. Unset or "auto": float32 on CPU; on a CUDA
GPU bfloat16 where the card computes it natively (compute capability 8.0 or newer, or ROCm), else float16. A dtype
the device can't run natively (bfloat16 on an older CUDA card) is a load error rather than a slow emulation. There
is no environment override: a reader's settings come from config.toml, LIFTOFF_READERS or the reader's own
--config-json, and a second per-process source would make the reader's reported config disagree with what it
loaded.

Environment:
  LIFTOFF_TORCH_THREADS  intra-op threads for CPU work (default: torch's own choice, one per core)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from liftoff.core.reader_config import DTYPE_CHOICES, DTYPE_NAMES
from liftoff.readers.engines.base import EngineLoadError

log = logging.getLogger(__name__)

T = TypeVar("T")
THREADS_ENV = "LIFTOFF_TORCH_THREADS"
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` as a torch device; a GPU that is not there is a load error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineLoadError(f"device {device!r} was asked for but torch sees no CUDA GPU; use device 'cpu'")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise EngineLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return torch.device("cuda", index)
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """The torch dtype that the reader setting `dtype` (a DTYPE_NAMES name; None is "auto") means on `device`."""
    name = DTYPE_NAMES.get((dtype or "auto").strip().lower())
    if name is None:
        raise EngineLoadError(f"dtype must be one of {DTYPE_CHOICES}; given {dtype!r}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.float32
    chosen = _TORCH_DTYPES[name]
    if chosen == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise EngineLoadError(
            f"dtype {dtype!r}: {device} ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor}) has "
            f"no native bfloat16 (8.0 or newer needed); use dtype 'float16' or 'auto'")
    return chosen


def native_bf16(device: torch.device) -> bool:
    """Whether this CUDA device computes bfloat16 in hardware (torch would emulate it on older cards, slowly)."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def configure_threads() -> None:
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return
    try:
        threads = int(raw)
        if threads < 1:
            raise ValueError
    except ValueError:
        raise EngineLoadError(f"{THREADS_ENV} must be a positive integer; given {raw!r}") from None
    torch.set_num_threads(threads)
    log.info("torch uses %d CPU threads", threads)


class TorchThread:
    """One named worker thread; `call` runs a function on it in inference mode and awaits the result."""

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(_inference, fn, *args))

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        return self._pool.submit(_inference, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _inference(fn: Callable[..., T], *args: Any) -> T:
    with torch.inference_mode():
        return fn(*args)
