"""The machine results are measured on: CPU model, GPUs, cores and architecture.

Validation records the CPU and GPU on every latency row, and the validation cache and the unchanged-rebuild check
key on `hardware()`: numbers measured on another machine are never reused as this one's.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (so latencies are compared on like hardware)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    """The CUDA GPU's name, or 'none'."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def gpu_names() -> list[str]:
    """NVIDIA GPUs the driver lists (`/proc/driver/nvidia/gpus/*/information`), else the board model on a Jetson
    (`/proc/device-tree/model`); [] when neither exists. Read from the kernel rather than through torch: importing
    torch costs seconds, and the unchanged check must be fast."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    board = Path("/proc/device-tree/model")
    if not names and board.is_file():
        names.append(board.read_text(errors="replace").strip("\x00\n "))
    return names


def hardware() -> dict[str, Any]:
    """The machine results were measured on: CPU model and cores (as validation records them), architecture, GPUs."""
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(), "gpus": gpu_names()}
