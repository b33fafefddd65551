"""What a run is measured on: the card's file-name slug, its L2 size, the checkout's commit,
the versions, device fields and date of a results file, and the torch.backends flags the
baselines and references run under."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Iterator

import torch

DEFAULT_L2_BYTES = 50 * 2**20


def card_slug(name: str) -> str:
    """A short file-name slug for a GPU name: 'NVIDIA H100 80GB HBM3' -> 'h100-sxm',
    'NVIDIA H100 PCIe' -> 'h100-pcie', 'NVIDIA H200' -> 'h200', 'NVIDIA A100-SXM4-80GB' -> 'a100-sxm4'."""
    tokens = re.findall(r"[a-z0-9]+", name.lower())
    tokens = [t for t in tokens if t not in ("nvidia", "geforce", "tesla", "corporation")]
    tokens = [t for t in tokens if not re.fullmatch(r"\d+gb|hbm\d*e?|gddr\d*x?", t)]
    if tokens and tokens[0] == "h100" and not ({"pcie", "nvl"} & set(tokens)) and not any(t.startswith("sxm") for t in tokens):
        tokens.append("sxm")  # the SXM part reports only "H100 80GB HBM3"
    return "-".join(tokens) or "unknown"


def l2_bytes(device: torch.device) -> int:
    """The L2 cache size of `device` (a Hopper-sized default where it is unknown or a CPU)."""
    if device.type != "cuda":
        return DEFAULT_L2_BYTES
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2_BYTES)


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the work tree has uncommitted changes) of the checkout fastres
    is imported from; outside a git checkout ($FASTRES_COMMIT or None, None)."""
    root = Path(__file__).resolve().parents[2]
    fallback = os.environ.get("FASTRES_COMMIT") or None, None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return fallback
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return fallback


def bench_date(value: str) -> str:
    """`value` if it is a calendar day written YYYY-MM-DD (what names a results file), else a
    one-line ValueError."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        _dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"the date must be a day as YYYY-MM-DD, e.g. 2026-01-02, got {value!r}") from None
    return value


def environment(device: torch.device, *, smoke: bool, date: str | None = None) -> dict:
    """The top-level fields of a results file (everything but `records`). `date` (YYYY-MM-DD)
    names the results file in place of today's UTC date: the steps of one run that crosses
    midnight then still share one file."""
    import triton

    from .. import __version__

    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover
        tv = None
    now = _dt.datetime.now(_dt.timezone.utc)
    commit, dirty = git_commit()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = torch.cuda.get_device_name(device)
        gpu = {
            "name": name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "l2_bytes": l2_bytes(device),
        }
        card = card_slug(name)
    else:
        name, gpu, card = f"cpu ({platform.processor() or platform.machine()}, triton interpreter)", None, "cpu"
    return {
        "device": name,
        "card": card,
        "date": bench_date(date) if date is not None else now.strftime("%Y-%m-%d"),
        "timestamp": now.isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": dirty,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torchvision": tv,
        "python": platform.python_version(),
        "fastres": __version__,
        "gpu": gpu,
        "smoke": smoke,
    }


@contextlib.contextmanager
def baseline_flags(*, benchmark: bool = True) -> Iterator[None]:
    """cudnn.benchmark on and TF32 off for the baselines and references; restored after."""
    b = torch.backends
    saved = (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = benchmark, False, False
    try:
        yield
    finally:
        b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = saved
