"""Detection on this machine (no GPU here) and the what-if overrides."""

from __future__ import annotations

import platform

from liftoff.control.detect import cached_specs, detect_specs
from liftoff.fit.hardware import GpuInfo, gpu_bandwidth_gbps, group_gpus, system_json, with_overrides

from support.fit import CPU_NODE, H100_NODE


def test_detects_this_machine() -> None:
    specs = detect_specs()
    assert specs.total_ram_gb > 0 and 0 < specs.available_ram_gb <= specs.total_ram_gb
    assert specs.cpu_cores >= 1 and specs.cpu_name and not specs.cpu_name.isdigit()
    system = system_json(specs)
    assert system["has_gpu"] is False and system["gpus"] == [] and system["gpu_count"] == 0
    assert system["gpu_vram_gb"] is None and system["gpu_name"] is None
    arch = "ARM" if platform.machine().lower().startswith(("arm", "aarch")) else "x86"
    assert system["backend"] == f"CPU ({arch})"


def test_detection_is_cached_briefly() -> None:
    assert cached_specs() is cached_specs()


def test_vram_override_adds_a_gpu() -> None:
    specs = with_overrides(CPU_NODE, vram_gb=24)
    assert specs.has_gpu and specs.hypothetical_gpu and specs.quant_libs
    assert (specs.backend, specs.gpu_vram_gb, specs.total_gpu_vram_gb) == ("CUDA", 24, 24)
    assert not with_overrides(H100_NODE, vram_gb=0).has_gpu
    # On a real GPU node the override resizes the cards and keeps their count.
    resized = with_overrides(H100_NODE, vram_gb=40)
    assert resized.gpu_count == 2 and resized.total_gpu_vram_gb == 80


def test_ram_and_cores_overrides() -> None:
    specs = with_overrides(CPU_NODE, ram_gb=128, cpu_cores=4)
    assert (specs.total_ram_gb, specs.available_ram_gb, specs.cpu_cores) == (128, 128, 4)


def test_identical_cards_are_grouped() -> None:
    cards = [GpuInfo("NVIDIA A100", 80.0), GpuInfo("NVIDIA A100", 80.0), GpuInfo("NVIDIA T4", 15.0)]
    grouped = group_gpus(cards)
    assert [(g.name, g.count) for g in grouped] == [("NVIDIA A100", 2), ("NVIDIA T4", 1)]


def test_bandwidth_table() -> None:
    assert gpu_bandwidth_gbps("NVIDIA H100 80GB HBM3") == 3350
    assert gpu_bandwidth_gbps("NVIDIA H100 PCIe") == 2000
    assert gpu_bandwidth_gbps("NVIDIA H200") == 4800
    assert gpu_bandwidth_gbps("NVIDIA GeForce RTX 4090") == 1008
    assert gpu_bandwidth_gbps("Tesla T4") == 320
    assert gpu_bandwidth_gbps("Hypothetical GPU") is None
