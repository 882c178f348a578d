"""What bench measures of one model: top1/top5, latency and peak memory on this device (the
kNN probe of its features is the core's, `learngene.core.training.knn_top1`). Every function
takes a plain nn.Module (a timm ViT)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
import torch.nn as nn


def device_name(device: torch.device) -> str:
    """The processor a figure was measured on: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    from learngene.core.evaluation import topk_hits

    return {f"top{k}": round(100 * h / len(labels), 2) for k, h in topk_hits(logits, labels, ks).items()}


def latency(
    model: nn.Module, batch_size: int, img_size: int, device: torch.device, min_run_time: float = 0.3, in_chans: int = 3
) -> dict:
    """Median and p90 seconds per forward of one batch, images/s and peak memory of one
    model alone, with bench's harness (`learngene.measure.probe.time_interleaved`: warm-up,
    then samples of ~5 ms until ``min_run_time`` is spent)."""
    from learngene.measure.probe import time_interleaved
    from learngene.measure.runtimes import TorchRunner

    runner = TorchRunner(model, img_size, device)
    st = time_interleaved({"m": runner.call(batch_size)}, min_run_time=min_run_time)["m"]
    x = torch.randn(batch_size, in_chans, img_size, img_size, device=device)
    return {
        "median_s": st["median_s"],
        "p90_s": st["p90_s"],
        "spread": st["spread"],
        "samples_per_sec": batch_size / st["median_s"],
        "peak_mib": peak_memory_mib(model, x),
    }


@torch.no_grad()
def peak_memory_mib(model: nn.Module, x: torch.Tensor) -> float | None:
    """Peak memory of one forward beyond what was in use before it, from CUDA's allocator
    statistics; None on a CPU (the resident high-water mark of a small model's batch reads 0:
    the allocator reuses memory, so that figure was dropped rather than reported as 0)."""
    if x.device.type != "cuda":
        return None
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    model(x)
    torch.cuda.synchronize(x.device)
    return (torch.cuda.max_memory_allocated(x.device) - base) / 2**20
