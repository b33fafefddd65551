"""One bench invocation (its device, options, budget and results) and the bookkeeping its
measurement loops share: the note a spent budget leaves, and freeing device memory between
points."""
from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Callable

import torch

from .results import save_results
from .timing import Budget, TimingOptions


@dataclasses.dataclass
class Run:
    """One bench invocation's settings and output."""

    device: torch.device
    smoke: bool
    out_path: Path
    results: dict
    timing: TimingOptions
    budget: Budget
    log: Callable[[str], None] = print
    # layers: also time these kernel variant families of each conv (fastres.benchmark.variants;
    # empty: none); variants_only: time only them, against the fastres records an earlier
    # process saved in the same results file (so that a variant that faults or hangs costs its
    # own process, never the baselines)
    variants: tuple[str, ...] = ()
    variants_only: bool = False

    def save(self) -> None:
        save_results(self.out_path, self.results)


def budget_note(run: Run, part: str, what: str) -> None:
    """Note in the results (and the log) that the budget ran out during `what`, so `part` is incomplete."""
    note = f"time budget of {run.budget.seconds:.0f} s spent during {what}: later measurements were not run"
    run.results.setdefault("incomplete", {})[part] = note
    run.log(f"STOP: {note}")


def free_memory(device: torch.device) -> None:
    """Give back what the last point allocated, so that the next one starts from an empty cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
