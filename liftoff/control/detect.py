"""Asking this machine what it has: psutil and `/proc/cpuinfo` for RAM and CPU, `torch.cuda` or NVML for GPUs.

Only two callers ask: the supervisor, through a short-lived child (`python -m liftoff.control.detect`, which prints
the node's `HardwareFacts` as JSON), and `liftoff fit` on the command line. Gateway workers never import this
module (import-linter forbids it): importing torch costs seconds and hundreds of megabytes, and querying CUDA on
the event loop that serves all six ports would stall every one of them. They read the facts the supervisor
publishes instead (`liftoff.fit.facts`).

torch and pynvml are both optional, and their absence reads as "no GPU". On Linux, CUDA needs `/dev/nvidia*`, ROCm
`/dev/kfd` and WSL `/dev/dxg`; when none of them exists no GPU can answer, so torch is not imported at all and
detection costs milliseconds rather than seconds.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import sys
import threading
import time
from dataclasses import replace

import psutil

from liftoff.fit.hardware import GIB, GpuInfo, SystemSpecs, group_gpus

SPECS_TTL_S = 5.0
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


def cpu_arch() -> str:
    machine = platform.machine().lower()
    return "ARM" if machine.startswith(("arm", "aarch")) else "x86"


def cpu_name() -> str:
    # x86 kernels say "model name" ("model" is a number there); ARM kernels say "Hardware" or "Model", if anything.
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if key in ("model name", "hardware", "model") and value and key not in found:
                    found[key] = value
    except OSError:
        pass
    for key in ("model name", "hardware", "model"):
        if key in found and not found[key].isdigit():
            return found[key]
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_device_nodes_present() -> bool:
    """Whether a GPU driver could answer at all (always "maybe" off Linux, where there is no such shortcut)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(glob.glob(pattern) for pattern in GPU_DEVICE_NODES)


def _torch_gpus() -> list[GpuInfo]:
    # torch is optional and slow to import: ask whether it exists before importing it.
    if importlib.util.find_spec("torch") is None:
        return []
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        backend = "ROCm" if getattr(torch.version, "hip", None) else "CUDA"
        cards = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            cards.append(GpuInfo(props.name, round(props.total_memory / GIB, 2), backend))
        return cards
    except Exception:  # noqa: BLE001 - a broken driver must read as "no GPU", never fail detection
        return []


def _nvml_gpus() -> list[GpuInfo]:
    if importlib.util.find_spec("pynvml") is None:
        return []
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            cards = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else name
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                cards.append(GpuInfo(str(name), round(memory.total / GIB, 2), "CUDA"))
            return cards
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML present without a driver is common in containers
        return []


def detect_gpus() -> tuple[GpuInfo, ...]:
    if not gpu_device_nodes_present():
        return ()
    # NVML sees cards that CUDA_VISIBLE_DEVICES hides from torch; torch is what a reader will use, so it wins.
    return group_gpus(_torch_gpus() or _nvml_gpus())


def detect_specs(probe_gpus: bool = True) -> SystemSpecs:
    """The whole node; `probe_gpus=False` leaves torch and NVML alone (and reports no GPU)."""
    memory = psutil.virtual_memory()
    return SystemSpecs(
        total_ram_gb=round(memory.total / GIB, 2),
        available_ram_gb=round(memory.available / GIB, 2),
        cpu_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        cpu_name=cpu_name(),
        cpu_arch=cpu_arch(),
        gpus=detect_gpus() if probe_gpus else (),
        quant_libs=importlib.util.find_spec("bitsandbytes") is not None,
    )


def with_fresh_memory(specs: SystemSpecs) -> SystemSpecs:
    """`specs` with RAM read again: what changes from one minute to the next (psutil, well under a millisecond)."""
    memory = psutil.virtual_memory()
    return replace(specs, total_ram_gb=round(memory.total / GIB, 2),
                   available_ram_gb=round(memory.available / GIB, 2))


_cache_lock = threading.Lock()
_cached: tuple[float, SystemSpecs] | None = None


def cached_specs(ttl_s: float = SPECS_TTL_S) -> SystemSpecs:
    """`detect_specs()`, kept a few seconds, for in-process callers that ask often (benchmarks, scripts)."""
    global _cached
    now = time.monotonic()
    with _cache_lock:
        if _cached is not None and now - _cached[0] < ttl_s:
            return _cached[1]
    specs = detect_specs()
    with _cache_lock:
        _cached = (now, specs)
    return specs


def main() -> int:
    """The supervisor's detection child: print this node's facts as one JSON line."""
    from liftoff.fit.facts import HardwareFacts

    sys.stdout.write(HardwareFacts(node=detect_specs(), published_s=time.time()).model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
