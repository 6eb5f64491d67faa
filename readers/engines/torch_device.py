"""Device, dtype and thread choices for torch engines, and the one thread each engine runs its torch work on.

Torch work never runs on the event loop: the reader must keep heartbeating and flushing replies while a batch
computes. Each engine owns one `TorchThread` (a single worker, so the model is never entered concurrently).

Environment:
  LIFTOFF_TORCH_THREADS  intra-op threads for CPU work (default: torch's own choice, one per core)
  LIFTOFF_TORCH_DTYPE    float32 | bfloat16 | float16 (default: float32 on CPU, bfloat16 on GPUs that support it)
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

from readers.engines.base import EngineLoadError

log = logging.getLogger(__name__)

T = TypeVar("T")
THREADS_ENV = "LIFTOFF_TORCH_THREADS"
DTYPE_ENV = "LIFTOFF_TORCH_DTYPE"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


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


def pick_dtype(device: torch.device) -> torch.dtype:
    forced = os.environ.get(DTYPE_ENV, "").strip().lower()
    if forced:
        if forced not in _DTYPES:
            raise EngineLoadError(f"{DTYPE_ENV} must be one of {', '.join(sorted(_DTYPES))}; given {forced!r}")
        return _DTYPES[forced]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


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
