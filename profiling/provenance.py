"""What a profile was measured on and with: device, driver, host CPU, software, inputs.
This module runs on a bare CUDA box: it imports torch, numpy and the standard library only.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offramp.common.machine import cpu_name

from .backends.base import Backend
from .segments import flatten


def nvidia_driver() -> str:
    """The NVIDIA driver version, or ``unknown``."""
    try:
        for line in Path("/proc/driver/nvidia/version").read_text().splitlines():
            if "Kernel Module" in line:
                return line.split("Kernel Module", 1)[1].split()[0]
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def device_info(device: str) -> dict[str, Any]:
    """What the profile was measured on: device name, driver, host CPU and core count."""
    if device == "cuda":
        return {"device": torch.cuda.get_device_name(), "driver": nvidia_driver(),
                "host_cpu": cpu_name(), "cpu_count": os.cpu_count()}
    return {"device": cpu_name(), "driver": "n/a (CPU)", "host_cpu": cpu_name(),
            "cpu_count": os.cpu_count()}


def software_versions(backend: Backend) -> dict[str, str]:
    """Python, torch, numpy, the OS and the backend's own libraries."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        offramp = version("offramp")
    except PackageNotFoundError:
        offramp = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "os": f"{platform.system()} {platform.release()}",
            "offramp": offramp, **backend.software()}


def input_description(example: Any) -> list[dict[str, Any]]:
    """Per-sample shape and dtype of each (flattened) model input."""
    return [{"shape": list(t.shape[1:]), "dtype": str(t.dtype).removeprefix("torch.")}
            for t in flatten(example)]
