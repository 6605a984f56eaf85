"""The one device and precision rule of training and inference, and the process-wide torch
settings a training process starts with."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from pipeline.model.config import PRECISIONS


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); torch only says so
    through a private function, wrapped here so that a torch without it means "no"."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


@dataclass(frozen=True)
class Precision:
    """Where the network runs and in which precision.

    Attributes:
        device: the training or inference device.
        autocast: bfloat16 autocast, or None for float32.
    """

    device: torch.device
    autocast: torch.dtype | None

    @property
    def name(self) -> str:
        return "bf16" if self.autocast == torch.bfloat16 else "fp32"

    def context(self) -> contextlib.AbstractContextManager:
        """Autocast for a forward pass (nothing in float32)."""
        return torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None)


def choose_precision(precision: str = "auto", device: str | torch.device | None = None,
                     cpu_bf16: bool = True) -> Precision:
    """A CUDA device when there is one (else the CPU, or ``device``); bfloat16 when asked, or
    for "auto" on CUDA and, where ``cpu_bf16``, on CPUs that compute it natively; float32
    otherwise. Inference passes ``cpu_bf16=False``: a series then scores the same on every
    CPU (bfloat16 moved location probabilities by up to 0.16 between two machines), while
    training keeps bfloat16's doubled speed where the CPU has it.

    Raises:
        ValueError: ``precision`` is not one of `PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = precision == "bf16" or (precision == "auto" and (device.type == "cuda" or (cpu_bf16 and cpu_has_bf16())))
    return Precision(device, torch.bfloat16 if bf16 else None)


def configure_training_process(processes: int = 1) -> None:
    """Process-wide settings for a process that trains (called by the CLI and the training
    benchmark, never by the library, which leaves its caller's process as it found it):
    its share of the cores among the ``processes`` training on this machine, and cuDNN's
    autotuner (every step has the same shapes)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(processes, 1)))
    torch.backends.cudnn.benchmark = True
