"""What the engine plans for: the device a schedule's tile configs are chosen for.

A schedule depends on the device only through these facts, so a schedule for an H100 can be
planned (and tested) on a machine without one: `DeviceInfo("NVIDIA H100 80GB HBM3", sms=132)`.
"""
from __future__ import annotations

import dataclasses

import torch

from .kernels._checks import interpreting
from .kernels.config import NUM_SMS_DEFAULT

CPU_NAME = "cpu-interpreter"


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """name: the card's name (part of the tuning cache key); sms: streaming multiprocessors
    (the split-K heuristic fills them); interpreter: kernels run through triton's CPU
    interpreter, whose tile sizes are chosen for the interpreter's speed, not a GPU's."""

    name: str
    sms: int = NUM_SMS_DEFAULT
    interpreter: bool = False

    def __post_init__(self):
        if self.sms < 1:
            raise ValueError(f"sms must be >= 1, got {self.sms}")

    @classmethod
    def of(cls, device: torch.device | str) -> "DeviceInfo":
        """The facts of a real device: a CUDA device's name and SM count, or the CPU
        (through the interpreter when TRITON_INTERPRET is set)."""
        device = torch.device(device)
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            return cls(torch.cuda.get_device_name(device), props.multi_processor_count, interpreting())
        return cls(CPU_NAME, NUM_SMS_DEFAULT, interpreting())

    def __str__(self) -> str:
        return f"{self.name} (interpreter)" if self.interpreter else f"{self.name}, {self.sms} SMs"
