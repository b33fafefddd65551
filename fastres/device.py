"""What the engine plans for: the device a schedule's tile configs are chosen for.

A schedule depends on the device only through these facts, so a schedule for any card can be
planned (and tested) on a machine without one: `DeviceInfo("NVIDIA H100 80GB HBM3", sms=132)`,
`DeviceInfo("NVIDIA L4", sms=58, target="sm_89", max_shared=101376)`.
"""
from __future__ import annotations

import dataclasses

import torch

from .kernels._checks import FLOAT_DTYPES, interpreting
from .kernels.config import NUM_SMS_DEFAULT
from .kernels.targets import DEFAULT_TARGET, QUANT_DTYPES, TARGETS, check_quant_dtype, device_facts

CPU_NAME = "cpu-interpreter"


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """name: the card's name (part of the tuning cache key); sms: streaming multiprocessors
    (the split-K heuristic fills them); interpreter: kernels run through triton's CPU
    interpreter, whose tile sizes are chosen for the interpreter's speed, not a GPU's;
    target: the compile target whose gate-cleared config space is used (`kernels.targets`);
    max_shared: the card's shared memory per block (None: its target's)."""

    name: str
    sms: int = NUM_SMS_DEFAULT
    interpreter: bool = False
    target: str = DEFAULT_TARGET
    max_shared: int | None = None

    def __post_init__(self):
        if self.sms < 1:
            raise ValueError(f"sms must be >= 1, got {self.sms}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; known: {', '.join(TARGETS)}")

    @classmethod
    def of(cls, device: torch.device | str) -> "DeviceInfo":
        """The facts of a real device: a CUDA device's name and SM count, or the CPU
        (through the interpreter when TRITON_INTERPRET is set)."""
        device = torch.device(device)
        if device.type == "cuda":
            # Refuses cards older than the oldest target (kernels.targets.UnsupportedDeviceError).
            facts = device_facts(device)
            return cls(facts.name, facts.sms, interpreting(), facts.target, facts.max_shared)
        return cls(CPU_NAME, NUM_SMS_DEFAULT, interpreting())

    def check_dtype(self, dtype: torch.dtype) -> None:
        """Refuse, up front, a dtype this device cannot run: float16 / bfloat16 / float32 run
        everywhere, the 8-bit dtypes as `kernels.targets.check_quant_dtype` says for the target
        (the interpreter runs both); anything else is a TypeError."""
        if dtype in FLOAT_DTYPES:
            return
        if self.interpreter and dtype in QUANT_DTYPES:
            return
        if dtype not in QUANT_DTYPES:
            names = ", ".join(str(d) for d in (*FLOAT_DTYPES, *QUANT_DTYPES))
            raise TypeError(f"fastres runs {names}, got {dtype}")
        check_quant_dtype(dtype, self.target, self.name)

    def __str__(self) -> str:
        if self.interpreter:
            return f"{self.name} (interpreter)"
        return f"{self.name}, {self.target}, {self.sms} SMs"
