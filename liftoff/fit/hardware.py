"""What a node has (RAM, CPU, GPUs) as plain values, and the "what if" overrides a scheduler may ask about.

Nothing here asks the hardware: `liftoff.control.detect` does that (torch, NVML), in the supervisor's detection
child and in `liftoff fit`. Gateway workers get a node's `SystemSpecs` from the facts the supervisor publishes
(`liftoff.fit.facts`), so this module, which they import, must stay free of torch and of detection.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass, field, replace
from typing import Any

GIB = 1024**3

# Peak memory bandwidth by GPU name fragment (first match wins, so longer names come first). Vendor data sheets.
GPU_BANDWIDTH_GBPS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIE", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),
    ("GH200", 4000.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB", 1935.0),
    ("A100", 1555.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A6000", 768.0),
    ("V100", 900.0),
    ("T4", 320.0),
    ("RTX 5090", 1792.0),
    ("RTX 4090", 1008.0),
    ("RTX 4080", 717.0),
    ("RTX 3090", 936.0),
    ("RTX 3080", 760.0),
    ("MI300X", 5300.0),
    ("MI250", 3280.0),
)


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One group of identical cards: per-card VRAM, how many."""

    name: str
    vram_gb: float | None
    backend: str = "CUDA"
    count: int = 1
    unified_memory: bool = False


@dataclass(frozen=True, slots=True)
class SystemSpecs:
    total_ram_gb: float
    available_ram_gb: float
    cpu_cores: int
    cpu_name: str
    cpu_arch: str  # "x86" or "ARM"
    gpus: tuple[GpuInfo, ...] = ()
    # bitsandbytes (or an equivalent) importable: 8-bit and 4-bit transformers loading is possible on a GPU.
    quant_libs: bool = False
    # True when a GPU came from a `vram_gb` override rather than from the hardware.
    hypothetical_gpu: bool = False
    node_name: str = field(default_factory=lambda: node_name())

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def primary_gpu(self) -> GpuInfo | None:
        return max(self.gpus, key=lambda g: g.vram_gb or 0.0) if self.gpus else None

    @property
    def gpu_count(self) -> int:
        return sum(g.count for g in self.gpus)

    @property
    def gpu_vram_gb(self) -> float | None:
        """Per-card VRAM of the primary GPU, as the reference reports it."""
        gpu = self.primary_gpu
        return gpu.vram_gb if gpu else None

    @property
    def total_gpu_vram_gb(self) -> float:
        """The GPU fit pool: every card's VRAM together."""
        return sum((g.vram_gb or 0.0) * g.count for g in self.gpus)

    @property
    def unified_memory(self) -> bool:
        return any(g.unified_memory for g in self.gpus)

    @property
    def backend(self) -> str:
        gpu = self.primary_gpu
        return gpu.backend if gpu else f"CPU ({self.cpu_arch})"

    @property
    def gpu_bandwidth_gbps(self) -> float | None:
        gpu = self.primary_gpu
        return gpu_bandwidth_gbps(gpu.name) if gpu else None


def gpu_bandwidth_gbps(name: str) -> float | None:
    upper = name.upper()
    for fragment, gbps in GPU_BANDWIDTH_GBPS:
        if fragment.upper() in upper:
            return gbps
    return None


def node_name() -> str:
    return os.environ.get("HOSTNAME", "").strip() or socket.gethostname() or "unknown-node"


def node_os() -> str:
    return platform.system().lower() or "unknown"


def group_gpus(cards: list[GpuInfo]) -> tuple[GpuInfo, ...]:
    """Identical cards (same name and VRAM) become one entry with a count."""
    groups: dict[tuple[str, float | None, str], int] = {}
    for card in cards:
        key = (card.name, card.vram_gb, card.backend)
        groups[key] = groups.get(key, 0) + card.count
    return tuple(GpuInfo(name, vram, backend, count) for (name, vram, backend), count in groups.items())


def with_overrides(specs: SystemSpecs, ram_gb: float | None = None, vram_gb: float | None = None,
                   cpu_cores: int | None = None) -> SystemSpecs:
    """The same node as if it had this much RAM, this much VRAM per card, or this many cores.

    `vram_gb` on a machine without a GPU adds one hypothetical CUDA card; a scheduler asking "what if" means a node
    that would have the usual libraries, so 8-/4-bit loading is assumed possible there. `vram_gb=0` removes GPUs.
    """
    if ram_gb is not None:
        # The question is "what fits in this much memory", so all of it counts as available.
        specs = replace(specs, total_ram_gb=ram_gb, available_ram_gb=ram_gb)
    if cpu_cores is not None:
        specs = replace(specs, cpu_cores=cpu_cores)
    if vram_gb is not None:
        if vram_gb <= 0:
            specs = replace(specs, gpus=())
        elif specs.gpus:
            specs = replace(specs, gpus=tuple(replace(g, vram_gb=vram_gb) for g in specs.gpus))
        else:
            specs = replace(specs, gpus=(GpuInfo("Hypothetical GPU", vram_gb, "CUDA"),), hypothetical_gpu=True,
                            quant_libs=True)
    return specs


def node_json(specs: SystemSpecs) -> dict[str, str]:
    return {"name": specs.node_name, "os": node_os()}


def system_json(specs: SystemSpecs) -> dict[str, Any]:
    """The reference's `system` object."""
    return {
        "total_ram_gb": round(specs.total_ram_gb, 2),
        "available_ram_gb": round(specs.available_ram_gb, 2),
        "cpu_cores": specs.cpu_cores,
        "cpu_name": specs.cpu_name,
        "has_gpu": specs.has_gpu,
        "gpu_vram_gb": None if specs.gpu_vram_gb is None else round(specs.gpu_vram_gb, 2),
        "gpu_name": specs.primary_gpu.name if specs.primary_gpu else None,
        "gpu_count": specs.gpu_count,
        "unified_memory": specs.unified_memory,
        "backend": specs.backend,
        "gpus": [
            {
                "name": g.name,
                "vram_gb": None if g.vram_gb is None else round(g.vram_gb, 2),
                "backend": g.backend,
                "count": g.count,
                "unified_memory": g.unified_memory,
            }
            for g in specs.gpus
        ],
    }
