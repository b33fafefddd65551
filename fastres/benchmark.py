"""The benchmark harness behind ``fastres bench`` and the scripts in ``bench/``.

What it measures (DESIGN.md section 6):

- ``e2e``: whole networks (resnet18 ... resnet152) at 224x224, per batch and dtype, for the
  systems ``fastres`` (the engine, CUDA-graphed), ``cudnn-eager`` (torchvision, channels_last,
  cast to the dtype, ``cudnn.benchmark=True``, ``torch.inference_mode()``), ``cudnn-eager-graph``
  (the same captured in one CUDA graph) and ``torch-compile`` (default mode; ``--max-autotune``
  adds ``torch-compile-max-autotune``).
- ``layers``: every distinct convolution of ResNet-50 and ResNet-18 (geometry, fused ReLU,
  fused residual), the fastres kernel against cuDNN doing the same fused work in eager
  (``cudnn-eager``: ``F.conv2d`` + bias + add + ReLU, channels_last) and ``F.conv2d`` alone
  (``cudnn-conv``), in TFLOP/s and % of the matrix peak measured in the same run.

How it times: every system is first checked against a reference (the float32 model or op with
TF32 off on the GPU, float64 on the CPU); a wrong system is recorded as ``wrong`` with its error
and is not timed. Then warm-up calls (at least ``--warmup-ms``), then enough repetitions to fill
``--rep-ms`` (between ``--min-reps`` and ``--max-reps``), each timed with its own pair of CUDA
events; the median, p10/p90 and quartiles are reported. End-to-end times are what a caller sees
(host overhead included where the GPU waits for it); per-layer times are device times (the GPU
spins before each repetition until the host has enqueued it). Inputs rotate over several buffer sets
whose total exceeds twice the L2 cache (per-layer sets include weights, bias, residual and
output); where the set count cap keeps the total under that, L2 is also flushed (a memset of
twice its size, outside the timed region) before every repetition.

Results go to ``<out>/<card>-<YYYY-MM-DD>.json`` (merged with a file of the same name, so
``layers`` and ``e2e`` runs of one day share a file), with a markdown table and a matplotlib
plot beside it. ``--smoke`` runs the same code through triton's CPU interpreter on tiny shapes:
its numbers are labelled as not performance figures and it never writes over real results.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------
# Names and defaults
# ------------------------------------------------------------------------------------------

E2E_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
E2E_BATCHES = (1, 8, 32, 64, 128, 256)
LAYER_MODELS = ("resnet50", "resnet18")
LAYER_BATCHES = (1, 32, 256)
GPU_DTYPES = ("float16", "bfloat16")
E2E_SYSTEMS = ("fastres", "cudnn-eager", "cudnn-eager-graph", "torch-compile")
MAX_AUTOTUNE_SYSTEM = "torch-compile-max-autotune"
ALL_E2E_SYSTEMS = E2E_SYSTEMS + (MAX_AUTOTUNE_SYSTEM,)
LAYER_SYSTEMS = ("fastres", "cudnn-eager", "cudnn-conv")
CUDA_ONLY_SYSTEMS = ("cudnn-eager-graph", "torch-compile", MAX_AUTOTUNE_SYSTEM)

SMOKE_LABEL = "SMOKE: interpreter, not a performance figure"
# The smoke run: the interpreter needs ~6 s for one resnet18 forward at 32x32 on a CI core, so
# the end-to-end part is one point (batch 2, float16: the check call, then one timed call) and
# the per-layer part four varied convs at batch 1 in float32 and float16.
SMOKE = dict(models=("resnet18",), e2e_batches=(2,), e2e_dtypes=("float16",), layer_batches=(1,),
             layer_dtypes=("float32", "float16"), size=32, max_layers=4)

TOP_LEVEL_KEYS = ("device", "date", "commit", "torch", "triton", "cuda", "records")
RECORD_KEYS = ("model", "batch", "dtype", "system", "median_ms", "images_per_s")
LAYER_RECORD_KEYS = RECORD_KEYS + ("layer", "tflops")

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_DTYPE_ALIASES = {
    "fp16": "float16", "half": "float16", "f16": "float16", "float16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float": "float32", "f32": "float32", "float32": "float32",
}

# Whole-network tolerances on the logits (DESIGN.md section 4): (base, cap). A system passes at
# rel <= min(cap, max(base, 2 x torch's own error at that dtype)); torch's eager itself at <= cap.
E2E_TOL = {"float32": (1e-4, 1e-4), "float16": (5e-3, 2e-2), "bfloat16": (2e-2, 5e-2)}
# Per-kernel tolerances (DESIGN.md section 4), used for every system of the per-layer bench.
LAYER_TOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}

DEFAULT_L2_BYTES = 50 * 2**20
MAX_ROTATION_SETS = 32


# ------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default method)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(float(v) for v in values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples_ms: Sequence[float]) -> dict:
    """Median and spread of per-repetition times in milliseconds."""
    if not samples_ms:
        raise ValueError("no timing samples")
    n = len(samples_ms)
    mean = sum(samples_ms) / n
    var = sum((v - mean) ** 2 for v in samples_ms) / (n - 1) if n > 1 else 0.0
    q1, q3 = percentile(samples_ms, 25), percentile(samples_ms, 75)
    return {
        "median_ms": percentile(samples_ms, 50),
        "p10_ms": percentile(samples_ms, 10),
        "p90_ms": percentile(samples_ms, 90),
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "mean_ms": mean,
        "std_ms": math.sqrt(var),
        "min_ms": min(samples_ms),
        "max_ms": max(samples_ms),
        "reps": n,
    }


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TimingOptions:
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    min_warmup: int = 2
    min_reps: int = 10
    max_reps: int = 1000


SMOKE_TIMING = TimingOptions(warmup_ms=0.0, rep_ms=0.0, min_warmup=0, min_reps=1, max_reps=1)


def rotation_count(set_bytes: int, l2_bytes: int, max_sets: int = MAX_ROTATION_SETS) -> tuple[int, bool]:
    """How many input sets to cycle so their total exceeds 2 x L2, and whether L2 must also be
    flushed between repetitions because the cap `max_sets` keeps the total under that."""
    target = 2 * l2_bytes
    n = max(2, min(max_sets, -(-target // max(1, set_bytes))))
    return n, n * set_bytes < target


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[int], object],
    n_sets: int,
    *,
    device: torch.device,
    options: TimingOptions = TimingOptions(),
    flush_bytes: int = 0,
    device_time: bool = False,
) -> dict:
    """Time `fn(i)` (i cycles over the `n_sets` input sets): warm-up, then one pair of CUDA
    events per repetition (host clock around a synchronized call on the CPU).

    The repetition count fills `options.rep_ms` at the per-call time seen during warm-up,
    within [min_reps, max_reps]. With `flush_bytes`, a buffer that size is zeroed before every
    repetition, outside the timed region, so that L2 holds nothing of the inputs.

    device_time=False (end to end): the events see what a caller sees, host overhead included
    when the GPU waits for the host (eager at small batch). device_time=True (single kernels):
    before each repetition the GPU spins (torch.cuda._sleep) for twice the host time of one
    call, so that the host has enqueued the whole repetition before its start event runs and
    the events measure device time alone, not launch latency.
    """
    i = 0
    t0 = time.perf_counter()
    n = 0
    host_ms: list[float] = []
    while n < options.min_warmup or (time.perf_counter() - t0) * 1e3 < options.warmup_ms:
        t = time.perf_counter()
        fn(i % n_sets)
        host_ms.append((time.perf_counter() - t) * 1e3)
        i += 1
        n += 1
        _sync(device)
    per_call_ms = (time.perf_counter() - t0) * 1e3 / n if n else 0.0
    reps = options.min_reps
    if per_call_ms > 0:
        reps = int(min(options.max_reps, max(options.min_reps, math.ceil(options.rep_ms / per_call_ms))))
    samples: list[float] = []
    lead_cycles = 0
    if device.type == "cuda":
        if device_time and hasattr(torch.cuda, "_sleep"):
            host = percentile(host_ms[1:] or host_ms or [0.05], 50)
            lead_ms = min(2.0, max(0.05, 2.0 * host))
            lead_cycles = int(lead_ms * 1e-3 * _clock_hz(device))
        flush = torch.empty(flush_bytes // 4, dtype=torch.int32, device=device) if flush_bytes else None
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        _sync(device)
        for r in range(reps):
            if lead_cycles:
                torch.cuda._sleep(lead_cycles)
            if flush is not None:
                flush.zero_()
            starts[r].record()
            fn(i % n_sets)
            ends[r].record()
            i += 1
        _sync(device)
        samples = [s.elapsed_time(e) for s, e in zip(starts, ends)]
        del flush
    else:
        for r in range(reps):
            t = time.perf_counter()
            fn(i % n_sets)
            samples.append((time.perf_counter() - t) * 1e3)
            i += 1
    stats = summarize(samples)
    stats["warmup_calls"] = n
    stats["timing_mode"] = "device" if lead_cycles else ("events" if device.type == "cuda" else "host")
    return stats


def _clock_hz(device: torch.device) -> float:
    """The SM clock for sizing a spin: the device's reported rate, else 2 GHz (Hopper's boost
    is ~1.98 GHz; a slower clock only makes the spin longer)."""
    khz = getattr(torch.cuda.get_device_properties(device), "clock_rate", 0) or 0
    return float(khz) * 1e3 if khz > 0 else 2.0e9


class Budget:
    """A wall-clock budget for a whole bench run: measurements stop once it is spent."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.perf_counter()

    def spent(self) -> bool:
        return self.seconds is not None and time.perf_counter() - self.start > self.seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ------------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------------

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
    if device.type != "cuda":
        return DEFAULT_L2_BYTES
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2_BYTES)


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the work tree has uncommitted changes) of the checkout fastres
    is imported from; outside a git checkout ($FASTRES_COMMIT or None, None)."""
    root = Path(__file__).resolve().parent.parent
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


def environment(device: torch.device, *, smoke: bool) -> dict:
    """The top-level fields of a results file (everything but `records`)."""
    import triton

    from . import __version__

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
        "date": now.strftime("%Y-%m-%d"),
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
def baseline_flags(*, benchmark: bool = True):
    """cudnn.benchmark on and TF32 off for the baselines and references; restored after."""
    b = torch.backends
    saved = (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = benchmark, False, False
    try:
        yield
    finally:
        b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = saved


# ------------------------------------------------------------------------------------------
# Numerics
# ------------------------------------------------------------------------------------------

def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_2 / ||ref||_2 in float64; inf when out is non-finite where ref is finite."""
    # float64 on the tensors' device: moving a 200M-element layer output to the host costs seconds
    o = out.detach().to(torch.float64)
    r = ref.detach().to(o.device, torch.float64)
    if tuple(o.shape) != tuple(r.shape):
        raise ValueError(f"output shape {tuple(o.shape)} != reference shape {tuple(r.shape)}")
    if bool((~torch.isfinite(o) & torch.isfinite(r)).any()):
        return math.inf
    return ((o - r).norm() / r.norm().clamp_min(1e-300)).item()


def e2e_tolerance(dtype: str, torch_rel: float | None, *, system: str) -> float:
    """The logits tolerance of DESIGN.md section 4 for `system` at `dtype`."""
    base, cap = E2E_TOL[dtype]
    if system == "cudnn-eager" or torch_rel is None or not math.isfinite(torch_rel):
        return cap if system == "cudnn-eager" else base
    return min(cap, max(base, 2.0 * torch_rel))


def _finite_or_none(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# ------------------------------------------------------------------------------------------
# The convolutions of a torchvision ResNet
# ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One distinct convolution of a ResNet (geometry + fused epilogue) and where it is used."""

    model: str
    k: int
    stride: int
    pad: int
    cin: int
    cout: int
    h: int
    w: int
    relu: bool
    residual: bool
    uses: tuple[str, ...] = ()

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.k) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad - self.k) // self.stride + 1

    @property
    def key(self) -> tuple:
        return (self.k, self.stride, self.pad, self.cin, self.cout, self.h, self.w, self.relu, self.residual)

    @property
    def name(self) -> str:
        """e.g. '3x3/1 64->64 @56x56 +res relu'."""
        s = f"{self.k}x{self.k}/{self.stride} {self.cin}->{self.cout} @{self.h}x{self.w}"
        return s + (" +res" if self.residual else "") + (" relu" if self.relu else "")

    def flops(self, batch: int) -> int:
        return 2 * batch * self.oh * self.ow * self.cout * self.cin * self.k * self.k

    def bytes(self, batch: int, itemsize: int) -> int:
        """Fewest bytes moved: input, weights, bias (fp32), output and residual once each."""
        act_in = batch * self.cin * self.h * self.w
        act_out = batch * self.cout * self.oh * self.ow
        weights = self.cout * self.cin * self.k * self.k
        return itemsize * (act_in + weights + act_out * (2 if self.residual else 1)) + 4 * self.cout


def _block_roles(model: torch.nn.Module) -> dict[str, tuple[bool, bool]]:
    """(relu, residual) of every conv, from torchvision's block structure: the last conv of a
    BasicBlock / Bottleneck carries the residual add and ReLU, the downsample conv neither."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    roles: dict[str, tuple[bool, bool]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (BasicBlock, Bottleneck)):
            last = "conv2" if isinstance(mod, BasicBlock) else "conv3"
            for child, sub in mod.named_modules():
                if isinstance(sub, torch.nn.Conv2d):
                    full = f"{name}.{child}"
                    if child.startswith("downsample"):
                        roles[full] = (False, False)
                    else:
                        roles[full] = (True, child == last)
    return roles


def conv_layers(model_name: str, size: int = 224) -> list[ConvLayer]:
    """Every distinct convolution of torchvision's `model_name` at `size`x`size` input, in the
    order of first use, found by walking the modules and running a forward on the meta device."""
    import torchvision

    if not hasattr(torchvision.models, model_name):
        raise ValueError(f"unknown torchvision model {model_name!r}")
    with torch.device("meta"):
        model = getattr(torchvision.models, model_name)()
    model.eval()
    seen: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(
                lambda m, inp, out, name=name: seen.__setitem__(name, tuple(inp[0].shape[2:]))
            ))
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    roles = _block_roles(model)
    distinct: dict[tuple, ConvLayer] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Conv2d):
            continue
        if mod.groups != 1 or mod.dilation != (1, 1) or mod.kernel_size[0] != mod.kernel_size[1]:
            raise ValueError(f"{model_name}.{name}: only square, ungrouped, undilated convs are benchmarked")
        relu, residual = roles.get(name, (True, False))  # the stem: conv + BN + ReLU
        h, w = seen[name]
        layer = ConvLayer(
            model_name, mod.kernel_size[0], mod.stride[0], mod.padding[0], mod.in_channels, mod.out_channels,
            h, w, relu, residual,
        )
        old = distinct.get(layer.key)
        distinct[layer.key] = dataclasses.replace(old or layer, uses=(old.uses if old else ()) + (name,))
    return list(distinct.values())


def pick_representative(layers: Sequence[ConvLayer], n: int) -> list[ConvLayer]:
    """At most `n` layers covering the most kinds first (kernel size, stride, residual), then
    in order: the smoke run's choice."""
    picked: list[ConvLayer] = []
    kinds = set()
    for layer in layers:
        kind = (layer.k, layer.stride, layer.residual)
        if kind not in kinds and len(picked) < n:
            kinds.add(kind)
            picked.append(layer)
    for layer in layers:
        if len(picked) >= n:
            break
        if layer not in picked:
            picked.append(layer)
    order = {layer.key: i for i, layer in enumerate(layers)}
    return sorted(picked, key=lambda l: order[l.key])


def model_gflop(model_name: str, size: int = 224) -> float:
    """Floating-point work of one image (2 x multiply-adds of the convs and the fc layer)."""
    total = 0
    for layer in conv_layers(model_name, size):
        total += layer.flops(1) * len(layer.uses)
    features = 512 if model_name in ("resnet18", "resnet34") else 2048
    return (total + 2 * features * 1000) / 1e9


# ------------------------------------------------------------------------------------------
# Results: schema, files, merge
# ------------------------------------------------------------------------------------------

def record_key(r: dict) -> tuple:
    return (r.get("kind"), r.get("model"), r.get("layer"), r.get("size"), r.get("batch"), r.get("dtype"), r.get("system"))


def new_results(env: dict) -> dict:
    results = dict(env)
    results["records"] = []
    if env.get("smoke"):
        results["label"] = SMOKE_LABEL
    return results


def add_record(results: dict, record: dict) -> dict:
    """Add `record`, replacing one with the same key (kind, model, layer, size, batch, dtype, system)."""
    key = record_key(record)
    results["records"] = [r for r in results["records"] if record_key(r) != key]
    results["records"].append(record)
    return record


def validate_results(results: dict) -> list[str]:
    """The schema's complaints about `results` (empty when it is well formed)."""
    problems = [f"missing top-level key {k!r}" for k in TOP_LEVEL_KEYS if k not in results]
    for i, r in enumerate(results.get("records", [])):
        need = LAYER_RECORD_KEYS if r.get("kind") == "layer" else RECORD_KEYS
        problems += [f"record {i} ({r.get('system')}): missing key {k!r}" for k in need if k not in r]
        if r.get("status", "ok") == "ok" and not isinstance(r.get("median_ms"), (int, float)):
            problems.append(f"record {i}: status ok without a median_ms")
    return problems


def results_path(out_dir: Path, env: dict) -> Path:
    prefix = "smoke-" if env.get("smoke") else ""
    return Path(out_dir) / f"{prefix}{env['card']}-{env['date']}.json"


def load_results(path: Path) -> dict:
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no results file at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(results, dict) or "records" not in results:
        raise ValueError(f"{path} is not a fastres results file (no 'records')")
    return results


def open_results(path: Path, env: dict) -> dict:
    """A results dict for this run: the existing file's records if it was made on the same
    device with the same smoke flag (its peaks kept), else a fresh one."""
    results = new_results(env)
    if path.is_file():
        try:
            old = load_results(path)
        except (ValueError, OSError):
            return results
        if old.get("device") == env["device"] and bool(old.get("smoke")) == bool(env.get("smoke")):
            results["records"] = list(old["records"])
            if old.get("peaks"):
                results["peaks"] = old["peaks"]
            if isinstance(old.get("incomplete"), dict):
                results["incomplete"] = dict(old["incomplete"])
    return results


def save_results(path: Path, results: dict) -> None:
    """Write atomically (a killed run leaves the previous complete file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=1, allow_nan=False, default=str)
        f.write("\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# Report: markdown and plot
# ------------------------------------------------------------------------------------------

def _fmt_ms(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _fmt_rate(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _status_cell(r: dict) -> str | None:
    status = r.get("status", "ok")
    if status == "ok":
        return None
    if status == "wrong":
        rel = r.get("rel_err")
        return f"WRONG (rel {rel:.1e})" if isinstance(rel, float) else "WRONG (non-finite)"
    return status


def _e2e_cell(r: dict | None, with_speedup: bool) -> str:
    if r is None:
        return ""
    bad = _status_cell(r)
    if bad:
        return bad
    cell = f"{_fmt_rate(r.get('images_per_s'))} img/s, {_fmt_ms(r.get('median_ms'))} ms"
    sp = r.get("fastres_speedup")
    if with_speedup and isinstance(sp, (int, float)):
        cell += f" (fastres {sp:.2f}x)"
    return cell


def _system_order(names: Iterable[str], known: Sequence[str]) -> list[str]:
    names = set(names)
    return [s for s in known if s in names] + sorted(names - set(known))


def markdown_e2e_table(results: dict, *, models: Sequence[str] | None = None) -> str:
    """The end-to-end table: one row per (model, dtype, batch), one column per system with
    images/s and median latency; baselines also show fastres' speedup over them
    (baseline median / fastres median, > 1 means fastres is faster)."""
    recs = [r for r in results.get("records", []) if r.get("kind", "e2e") == "e2e"]
    if models:
        recs = [r for r in recs if r["model"] in models]
    if not recs:
        return "_no end-to-end records_\n"
    systems = _system_order((r["system"] for r in recs), ALL_E2E_SYSTEMS)
    rows: dict[tuple, dict] = {}
    for r in recs:
        rows.setdefault((r["model"], r["dtype"], r.get("size", 224), r["batch"]), {})[r["system"]] = r
    model_order = {m: i for i, m in enumerate(E2E_MODELS)}
    lines = []
    if results.get("smoke"):
        lines.append(f"**{SMOKE_LABEL}**\n")
    lines.append("| model | dtype | size | batch | " + " | ".join(systems) + " |")
    lines.append("|---|---|---|---:|" + "---|" * len(systems))
    for (model, dtype, size, batch) in sorted(rows, key=lambda k: (model_order.get(k[0], 99), k[0], k[1], k[2], k[3])):
        cells = [_e2e_cell(rows[(model, dtype, size, batch)].get(s), s != "fastres") for s in systems]
        lines.append(f"| {model} | {dtype} | {size} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_layer_table(results: dict) -> str:
    """Per-layer tables, one per (model, dtype, batch): the fastres kernel's time, TFLOP/s and
    % of the measured matrix peak beside cuDNN's fused eager and conv-only times."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "layer"]
    if not recs:
        return "_no per-layer records_\n"
    groups: dict[tuple, dict[str, dict[str, dict]]] = {}
    for r in recs:
        groups.setdefault((r["model"], r["dtype"], r["batch"]), {}).setdefault(r["layer"], {})[r["system"]] = r
    out = []
    if results.get("smoke"):
        out.append(f"**{SMOKE_LABEL}**\n")
    for (model, dtype, batch) in sorted(groups):
        layers = groups[(model, dtype, batch)]
        out.append(f"#### {model}, {dtype}, batch {batch}\n")
        out.append("| layer | uses | fastres ms | TFLOP/s | % peak | cudnn-eager ms | cudnn-conv ms | fastres vs cudnn-eager |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        totals = {"fastres": 0.0, "cudnn-eager": 0.0, "cudnn-conv": 0.0}
        complete = {k: True for k in totals}
        for layer, by_sys in layers.items():
            f, e, c = by_sys.get("fastres"), by_sys.get("cudnn-eager"), by_sys.get("cudnn-conv")
            any_rec = f or e or c
            uses = len(any_rec.get("uses", ())) or 1

            def t(r):
                if r is None:
                    return "-"
                return _status_cell(r) or _fmt_ms(r.get("median_ms"))

            for name, r in (("fastres", f), ("cudnn-eager", e), ("cudnn-conv", c)):
                if r is not None and r.get("status", "ok") == "ok":
                    totals[name] += r["median_ms"] * uses
                else:
                    complete[name] = False
            ok_f = f is not None and f.get("status", "ok") == "ok"
            ok_e = e is not None and e.get("status", "ok") == "ok"
            tflops = f"{f['tflops']:.1f}" if ok_f and isinstance(f.get("tflops"), (int, float)) else "-"
            pct = f"{f['pct_peak']:.0f}%" if ok_f and isinstance(f.get("pct_peak"), (int, float)) else "-"
            ratio = f"{e['median_ms'] / f['median_ms']:.2f}x" if ok_f and ok_e and f["median_ms"] > 0 else "-"
            out.append(f"| {layer} | {uses} | {t(f)} | {tflops} | {pct} | {t(e)} | {t(c)} | {ratio} |")
        if all(complete.values()) and totals["fastres"] > 0:
            out.append(
                f"| **all convs, x uses** | | **{_fmt_ms(totals['fastres'])}** | | | **{_fmt_ms(totals['cudnn-eager'])}** "
                f"| **{_fmt_ms(totals['cudnn-conv'])}** | **{totals['cudnn-eager'] / totals['fastres']:.2f}x** |"
            )
        out.append("")
    return "\n".join(out) + "\n"


def render_markdown(results: dict) -> str:
    """The whole report of a results file: header, measured peaks, e2e table, per-layer tables."""
    lines = []
    title = "fastres benchmark" + (f" ({SMOKE_LABEL})" if results.get("smoke") else "")
    lines.append(f"# {title}\n")
    commit = results.get("commit") or "unknown"
    if results.get("dirty"):
        commit += " (uncommitted changes)"
    lines.append(
        f"{results.get('device', '?')}, {results.get('date', '?')}; commit {commit}; torch {results.get('torch')}, "
        f"triton {results.get('triton')}, CUDA {results.get('cuda')}, cuDNN {results.get('cudnn')}.\n"
    )
    peaks = results.get("peaks") or {}
    if peaks:
        parts = [f"{dt} matmul {v:.3g} TFLOP/s" for dt, v in (peaks.get("matmul_tflops") or {}).items()]
        if peaks.get("copy_tb_s"):
            parts.append(f"device-to-device copy {peaks['copy_tb_s']:.3g} TB/s (read + write)")
        lines.append(f"Measured peaks ({peaks.get('note', '')}): " + "; ".join(parts) + ".\n")
    timing = results.get("timing")
    if timing:
        lines.append(f"Timing: {timing}\n")
    for note in (results.get("incomplete") or {}).values():
        lines.append(f"**Incomplete:** {note}\n")
    lines.append("## End to end\n")
    lines.append(markdown_e2e_table(results))
    lines.append("## Per layer\n")
    lines.append(markdown_layer_table(results))
    heads = markdown_head_table(results)
    if heads:
        lines.append("## Classifier head\n")
        lines.append(heads)
    return "\n".join(lines)


def markdown_head_table(results: dict) -> str:
    """The classifier head alone per (model, dtype, batch): fastres beside torch eager."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "head"]
    if not recs:
        return ""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in recs:
        groups.setdefault((r["model"], r["dtype"], r["batch"], r["layer"]), {})[r["system"]] = r
    out = ["| model | dtype | batch | head | fastres ms | config | unsplit ms | cudnn-eager ms | fastres vs cudnn-eager |",
           "|---|---|---:|---|---:|---|---:|---:|---:|"]
    for (model, dtype, batch, layer), by_sys in sorted(groups.items()):
        f, e = by_sys.get("fastres") or {}, by_sys.get("cudnn-eager") or {}

        def cell(r):
            return _status_cell(r) or _fmt_ms(r.get("median_ms")) if r else "-"

        ratio = f"{e['fastres_speedup']:.2f}x" if e.get("fastres_speedup") else "-"
        unsplit = _fmt_ms(f.get("unsplit_median_ms")) if f.get("unsplit_median_ms") else "-"
        out.append(f"| {model} | {dtype} | {batch} | {layer} | {cell(f)} | {f.get('config', '-')} | {unsplit} "
                   f"| {cell(e)} | {ratio} |")
    return "\n".join(out) + "\n"


def summary_text(results: dict) -> str:
    """A short fixed-width overview (printed last by bench/device_run.sh): e2e medians with
    fastres' speedup over each baseline, per-layer totals (distinct convs x uses), and every
    record that is wrong or failed."""
    lines = []
    if results.get("smoke"):
        lines.append(SMOKE_LABEL)
    recs = results.get("records", [])
    e2e = [r for r in recs if r.get("kind", "e2e") == "e2e"]
    if e2e:
        systems = _system_order((r["system"] for r in e2e), ALL_E2E_SYSTEMS)
        lines.append("e2e median ms (fastres speedup = baseline / fastres)")
        lines.append(f"{'model':10s}{'dtype':9s}{'batch':>6s}  " + "".join(f"{s:>20s}" for s in systems))
        rows: dict[tuple, dict] = {}
        for r in e2e:
            rows.setdefault((r["model"], r["dtype"], r["batch"]), {})[r["system"]] = r
        for key in sorted(rows, key=lambda k: (E2E_MODELS.index(k[0]) if k[0] in E2E_MODELS else 99, k)):
            cells = []
            for s in systems:
                r = rows[key].get(s)
                if r is None:
                    cells.append("")
                elif r.get("status", "ok") != "ok":
                    cells.append(r.get("status", "?"))
                else:
                    sp = r.get("fastres_speedup")
                    cells.append(f"{r['median_ms']:.3f}" + (f" ({sp:.2f}x)" if isinstance(sp, (int, float)) else ""))
            lines.append(f"{key[0]:10s}{key[1]:9s}{key[2]:>6d}  " + "".join(f"{c:>20s}" for c in cells))
    layer = [r for r in recs if r.get("kind") == "layer"]
    if layer:
        lines.append("per-layer totals, ms (sum over distinct convs x uses; complete groups only)")
        groups: dict[tuple, dict[str, list]] = {}
        for r in layer:
            groups.setdefault((r["model"], r["dtype"], r["batch"]), {}).setdefault(r["system"], []).append(r)
        for key in sorted(groups):
            parts = []
            totals = {}
            for s in _system_order(groups[key], LAYER_SYSTEMS):
                rs = groups[key][s]
                if all(r.get("status", "ok") == "ok" for r in rs):
                    totals[s] = sum(r["median_ms"] * max(1, len(r.get("uses", ()))) for r in rs)
                    parts.append(f"{s} {totals[s]:.3f}")
                else:
                    parts.append(f"{s} incomplete")
            ratio = ""
            if totals.get("fastres") and totals.get("cudnn-eager"):
                ratio = f"  fastres {totals['cudnn-eager'] / totals['fastres']:.2f}x vs cudnn-eager"
            n = len({r["layer"] for rs in groups[key].values() for r in rs})
            lines.append(f"{key[0]:10s}{key[1]:9s}b{key[2]:<5d} {n:2d} convs: " + ", ".join(parts) + ratio)
    for r in (r for r in recs if r.get("kind") == "head" and r.get("system") == "fastres"):
        eager = next((e for e in recs if e.get("kind") == "head" and e.get("system") == "cudnn-eager"
                      and all(e.get(k) == r.get(k) for k in ("model", "dtype", "batch", "size"))), None)
        parts = [f"fastres {_fmt_ms(r.get('median_ms'))} ms ({r.get('config')})"]
        if eager is not None:
            parts.append(f"cudnn-eager {_fmt_ms(eager.get('median_ms'))} ms")
        if r.get("status") != "ok":
            parts.append(f"{r.get('status')}: {r.get('reason')}")
        lines.append(f"head {r['model']} {r['dtype']} b{r['batch']}: " + ", ".join(parts))
    split = [r for r in recs if r.get("unsplit_median_ms") and r.get("median_ms")]
    if split:
        lines.append("split-K layers (fastres split vs the same tile unsplit, device time)")
        for r in split:
            lines.append(f"  {r['model']} {r['dtype']} b{r['batch']} {r['layer']}: {r['config']} "
                         f"{r['median_ms'] * 1e3:.1f} us vs {r['unsplit_median_ms'] * 1e3:.1f} us "
                         f"({r['split_speedup']:.2f}x)")
    bad = [r for r in recs if r.get("status") in ("wrong", "error")]
    for r in bad:
        lines.append(f"{r['status'].upper()}: {r.get('kind')} {r['model']} {r.get('layer', '')} b{r['batch']} {r['dtype']} "
                     f"{r['system']}: {r.get('reason')}")
    for note in (results.get("incomplete") or {}).values():
        lines.append(f"incomplete: {note}")
    return "\n".join(lines) + "\n"


def write_plot(results: dict, path: Path) -> Path | None:
    """img/s vs batch, one line per system, one panel per (model, dtype); None (with a message)
    when matplotlib is missing or there are no end-to-end records."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed", flush=True)
        return None
    recs = [r for r in results.get("records", []) if r.get("kind", "e2e") == "e2e" and r.get("status", "ok") == "ok"]
    if not recs:
        print("plot skipped: no timed end-to-end records", flush=True)
        return None
    panels = sorted({(r["model"], r["dtype"]) for r in recs}, key=lambda k: (E2E_MODELS.index(k[0]) if k[0] in E2E_MODELS else 99, k))
    models = sorted({m for m, _ in panels}, key=lambda m: E2E_MODELS.index(m) if m in E2E_MODELS else 99)
    dtypes = sorted({d for _, d in panels})
    fig, axes = plt.subplots(len(models), len(dtypes), figsize=(max(6.4, 4.2 * len(dtypes)), 0.6 + 3.2 * len(models)),
                             squeeze=False)
    batches = sorted({r["batch"] for r in recs})
    systems = _system_order((r["system"] for r in recs), ALL_E2E_SYSTEMS)
    for i, model in enumerate(models):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            for s in systems:
                pts = sorted((r["batch"], r["images_per_s"]) for r in recs if (r["model"], r["dtype"], r["system"]) == (model, dtype, s))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches)
            ax.set_xticklabels([str(b) for b in batches])
            ax.minorticks_off()
            ax.set_title(f"{model}, {dtype}", fontsize=9)
            ax.set_xlabel("batch")
            ax.set_ylabel("images/s")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    head = f"{results.get('device', '')}, {results.get('date', '')}, commit {str(results.get('commit') or '?')[:10]}"
    if results.get("smoke"):
        head = f"{SMOKE_LABEL}\n{head}"
    fig.suptitle(head, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(json_path: Path, results: dict | None = None, *, plot: bool = True) -> tuple[Path, Path | None]:
    """Write `<name>.md` (and `<name>.png`) beside a results file; returns their paths."""
    results = results if results is not None else load_results(json_path)
    md = json_path.with_suffix(".md")
    md.write_text(render_markdown(results))
    png = write_plot(results, json_path.with_suffix(".png")) if plot else None
    return md, png


# ------------------------------------------------------------------------------------------
# Peaks
# ------------------------------------------------------------------------------------------

def measure_peaks(device: torch.device, dtypes: Sequence[str], *, smoke: bool, timing: TimingOptions) -> dict:
    """The matrix rate (an n^3 matmul of random data per dtype) and the copy bandwidth (a large
    device-to-device copy, bytes read + written) of this device, measured once per run."""
    n = 256 if smoke else 8192
    copy_bytes = 2**23 if smoke else 2**30
    peaks: dict = {"matmul_tflops": {}, "note": f"{n}^3 matmul, {copy_bytes >> 20} MiB copy" + (", smoke" if smoke else "")}
    with baseline_flags():
        for name in dtypes:
            dt = DTYPES[name]
            a = torch.randn(n, n, device=device).to(dt)
            b = torch.randn(n, n, device=device).to(dt)
            stats = measure(lambda i: torch.matmul(a, b), 1, device=device, options=timing)
            peaks["matmul_tflops"][name] = 2 * n**3 / (stats["median_ms"] * 1e-3) / 1e12
            del a, b
        src = torch.randn(copy_bytes // 4, device=device)
        dst = torch.empty_like(src)
        stats = measure(lambda i: dst.copy_(src), 1, device=device, options=timing)
        peaks["copy_tb_s"] = 2 * copy_bytes / (stats["median_ms"] * 1e-3) / 1e12
        del src, dst
    _free(device)
    return peaks


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------

def build_model(name: str, device: torch.device, *, calib_size: int, seed: int = 0) -> torch.nn.Module:
    """torchvision's `name` with random weights and calibrated BN, float32, eval, on `device`."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None).to(device)
    from .models import calibrate_

    return calibrate_(model, size=(calib_size, calib_size), seed=seed)


class GraphedModule:
    """`module` captured in one CUDA graph for one input shape; a call copies the input into
    the static buffer and replays."""

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, warmup: int = 3):
        self.static_x = example.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                module(self.static_x)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_y = module(self.static_x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_y


# `fastres bench --tune`: the fastres system tunes each conv's tile config on its first forward
# (fastres.tuning; the tuning time is in `first_call_s`, never in the timed calls).
FASTRES_OPTIONS = {"tune": False}


def build_fastres(model: torch.nn.Module, dtype: torch.dtype, device: torch.device):
    """The fastres engine for `model` (CUDA-graphed on a GPU)."""
    import fastres

    tune = FASTRES_OPTIONS["tune"] and device.type == "cuda"
    return fastres.from_torchvision(model, dtype=dtype, cuda_graph=device.type == "cuda", tune=tune)


# ------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------

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

    def save(self) -> None:
        save_results(self.out_path, self.results)


def _budget_note(run: Run, part: str, what: str) -> None:
    note = f"time budget of {run.budget.seconds:.0f} s spent during {what}: later measurements were not run"
    run.results.setdefault("incomplete", {})[part] = note
    run.log(f"STOP: {note}")


def _base_record(kind: str, model: str, batch: int, dtype: str, system: str, size: int) -> dict:
    return {"kind": kind, "model": model, "batch": batch, "dtype": dtype, "system": system, "size": size,
            "median_ms": None, "images_per_s": None, "status": "ok"}


def _timed_record(rec: dict, stats: dict, batch: int) -> dict:
    rec.update({k: v for k, v in stats.items()})
    rec["images_per_s"] = batch / (stats["median_ms"] * 1e-3) if stats["median_ms"] > 0 else None
    return rec


def run_e2e(run: Run, models: Sequence[str], batches: Sequence[int], dtypes: Sequence[str], systems: Sequence[str], size: int) -> None:
    """End-to-end latency of every system at every (model, dtype, batch)."""
    device, l2 = run.device, l2_bytes(run.device)
    for model_name in models:
        if run.budget.spent():
            return _budget_note(run, "e2e", f"e2e {model_name}")
        model32 = build_model(model_name, device, calib_size=min(size, 64))
        gflop = model_gflop(model_name, size)
        ref_model = copy.deepcopy(model32).double() if device.type == "cpu" else model32
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            eager = copy.deepcopy(model32).to(dtype=dtype, memory_format=torch.channels_last).eval()
            built: dict[str, object] = {}
            build_errors: dict[str, str] = {}
            for batch in batches:
                if run.budget.spent():
                    return _budget_note(run, "e2e", f"e2e {model_name} {dtype_name} batch {batch}")
                _e2e_point(run, model_name, dtype_name, dtype, batch, size, systems, model32, ref_model, eager,
                           built, build_errors, l2, gflop)
                run.save()
            del eager, built
            _free(device)
        del model32, ref_model
        _free(device)


def _e2e_point(run, model_name, dtype_name, dtype, batch, size, systems, model32, ref_model, eager, built, build_errors, l2, gflop):
    device = run.device
    set_bytes = batch * 3 * size * size * dtype.itemsize
    n_sets, _ = rotation_count(set_bytes, l2, max_sets=16)
    gen = torch.Generator(device=device).manual_seed(1000 * batch + size)
    xs = [torch.randn(batch, 3, size, size, generator=gen, device=device).to(dtype)
          .contiguous(memory_format=torch.channels_last) for _ in range(n_sets)]
    try:
        with torch.inference_mode():
            with baseline_flags(benchmark=False):
                ref = ref_model(xs[0].to(next(ref_model.parameters()).dtype))
            with baseline_flags():
                torch_rel = rel_error(eager(xs[0]), ref)
    except Exception as exc:  # e.g. out of memory at a big batch: record it, go on
        for system in systems:
            rec = _base_record("e2e", model_name, batch, dtype_name, system, size)
            add_record(run.results, rec).update(status="error", reason=f"reference forward failed: {_first_line(exc)}")
        run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} reference forward failed: {_first_line(exc)}")
        del xs
        _free(device)
        return
    point: dict[str, dict] = {}
    for system in systems:
        rec = _base_record("e2e", model_name, batch, dtype_name, system, size)
        rec.update(gflop_per_image=gflop, rotation_sets=n_sets)
        add_record(run.results, rec)
        point[system] = rec
        if device.type != "cuda" and system in CUDA_ONLY_SYSTEMS:
            rec.update(status="skipped", reason="needs CUDA" + (" (smoke runs on the CPU)" if run.smoke else ""))
            run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} skipped: {rec['reason']}")
            continue
        if system in build_errors:
            rec.update(status="error", reason=build_errors[system])
            continue
        try:
            fn, first_s = _e2e_system(system, model32, eager, dtype, device, xs[0], built)
            with torch.inference_mode(), system_flags(system):
                t = time.perf_counter()
                out = fn(xs[0])
                _sync(device)
                first_s += time.perf_counter() - t
                rel = rel_error(out, ref)
                del out
            tol = e2e_tolerance(dtype_name, torch_rel, system=system)
            rec.update(rel_err=_finite_or_none(rel), tol=tol, first_call_s=round(first_s, 3))
            if device.type == "cuda" and system == "fastres":
                rec["cuda_graph"] = True
            if not rel <= tol:
                rec.update(status="wrong", reason=f"logits rel error {rel:.3e} > {tol:.1e} vs the float32 reference: not timed")
                run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} WRONG rel {rel:.2e} > {tol:.1e}")
                continue
            with torch.inference_mode(), system_flags(system):
                stats = measure(lambda i: fn(xs[i]), n_sets, device=device, options=run.timing)
            _timed_record(rec, stats, batch)
            rec["tflops"] = gflop * batch / (stats["median_ms"] * 1e-3) / 1e3
            run.log(
                f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} {stats['median_ms']:9.3f} ms "
                f"(p10 {stats['p10_ms']:.3f}, p90 {stats['p90_ms']:.3f})  {rec['images_per_s']:10.1f} img/s  rel {rel:.1e}"
            )
        except Exception as exc:  # one broken system must not end the run
            reason = _first_line(exc)
            rec.update(status="error", reason=reason)
            if system != "cudnn-eager-graph" and isinstance(exc, (ImportError, AttributeError, TypeError)):
                build_errors[system] = reason
            run.log(f"e2e  {model_name:9s} {dtype_name:8s} b{batch:<4d} {system:26s} ERROR {reason}")
            if device.type == "cuda" and isinstance(exc, torch.cuda.OutOfMemoryError):
                _free(device)
    built.pop("cudnn-eager-graph", None)
    _speedups(point)
    del xs
    _free(device)


def system_flags(system: str):
    return contextlib.nullcontext() if system == "fastres" else baseline_flags()


def _e2e_system(system, model32, eager, dtype, device, example, built) -> tuple[Callable, float]:
    """The callable for `system` (built once per dtype, graphs once per shape) and build time."""
    t = time.perf_counter()
    if system == "fastres":
        if "fastres" not in built:
            built["fastres"] = build_fastres(model32, dtype, device)
        fn = built["fastres"]
    elif system == "cudnn-eager":
        fn = eager
    elif system == "cudnn-eager-graph":
        with torch.inference_mode(), baseline_flags():
            built[system] = GraphedModule(eager, example)
        fn = built[system]
    elif system in ("torch-compile", MAX_AUTOTUNE_SYSTEM):
        if system not in built:
            mode = "max-autotune" if system == MAX_AUTOTUNE_SYSTEM else None
            built[system] = torch.compile(eager, mode=mode, dynamic=False)
        fn = built[system]
    else:
        raise ValueError(f"unknown system {system!r}")
    return fn, time.perf_counter() - t


def _speedups(point: dict[str, dict]) -> None:
    f = point.get("fastres")
    if not f or f.get("status") != "ok" or not f.get("median_ms"):
        return
    for name, rec in point.items():
        if name != "fastres" and rec.get("status") == "ok" and rec.get("median_ms"):
            rec["fastres_speedup"] = rec["median_ms"] / f["median_ms"]


@dataclasses.dataclass
class LayerInputs:
    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    b_cast: torch.Tensor
    r: torch.Tensor | None
    out: torch.Tensor


def layer_inputs(layer: ConvLayer, batch: int, dtype: torch.dtype, device: torch.device, n: int, gen: torch.Generator) -> list[LayerInputs]:
    """`n` independent input sets for `layer` at `batch`: x, weights (He-scaled), float32 bias,
    residual (if the layer has one) and an output buffer, all channels_last in `dtype`."""
    cl = torch.channels_last

    def randn(*shape):  # drawn on the device: host RNG for a batch-256 activation takes seconds
        return torch.randn(*shape, generator=gen, device=device)

    sets = []
    for _ in range(n):
        x = randn(batch, layer.cin, layer.h, layer.w).to(dtype).contiguous(memory_format=cl)
        fan_in = layer.cin * layer.k * layer.k
        w = (randn(layer.cout, layer.cin, layer.k, layer.k) * math.sqrt(2.0 / fan_in)).to(dtype).contiguous(memory_format=cl)
        b = randn(layer.cout) * 0.2
        r = None
        if layer.residual:
            r = randn(batch, layer.cout, layer.oh, layer.ow).to(dtype).contiguous(memory_format=cl)
        out = torch.empty(batch, layer.cout, layer.oh, layer.ow, device=device, dtype=dtype, memory_format=cl)
        sets.append(LayerInputs(x, w, b, b.to(dtype), r, out))
    return sets


def fastres_layer_config(layer: ConvLayer, s: LayerInputs):
    """The config fastres' launcher picks for `layer` on input set `s` (what the engine runs)."""
    from .kernels.conv import check_conv_args, conv_config
    from .kernels.gemm1x1 import conv1x1_config

    g = check_conv_args(s.x, s.w, s.b, layer.stride, layer.pad, s.r, s.out, "ieee")
    if layer.k == 1:
        return conv1x1_config(g, s.x.dtype, s.x.device)
    return conv_config(g, s.x.dtype, s.x.device, residual=s.r is not None)


def layer_callable(system: str, layer: ConvLayer, sets: list[LayerInputs], config=None) -> Callable[[int], torch.Tensor]:
    """fn(i) running `system` on input set i: 'fastres' (the kernel, written into the set's
    output buffer; `config` overrides the launcher's choice), 'cudnn-eager' (F.conv2d + bias,
    then in-place add and ReLU) or 'cudnn-conv'."""
    from . import kernels as K

    if system == "fastres":
        if layer.k == 1:
            return lambda i: K.conv1x1(sets[i].x, sets[i].w, sets[i].b, stride=layer.stride, relu=layer.relu,
                                       residual=sets[i].r, out=sets[i].out, config=config)
        return lambda i: K.conv_bn_relu(sets[i].x, sets[i].w, sets[i].b, stride=layer.stride, padding=layer.pad,
                                        relu=layer.relu, residual=sets[i].r, out=sets[i].out, config=config)
    if system == "cudnn-eager":
        def fused(i):
            s = sets[i]
            y = F.conv2d(s.x, s.w, s.b_cast, stride=layer.stride, padding=layer.pad)
            if s.r is not None:
                y.add_(s.r)
            if layer.relu:
                y.relu_()
            return y
        return fused
    if system == "cudnn-conv":
        return lambda i: F.conv2d(sets[i].x, sets[i].w, None, stride=layer.stride, padding=layer.pad)
    raise ValueError(f"unknown layer system {system!r}")


def layer_reference(layer: ConvLayer, s: LayerInputs, *, fused: bool, device: torch.device) -> torch.Tensor:
    """The layer in float32 with TF32 off (float64 on the CPU or for float32 inputs); `fused`
    adds bias, residual and ReLU."""
    rdt = torch.float64 if (device.type == "cpu" or s.x.dtype == torch.float32) else torch.float32
    with baseline_flags(benchmark=False):
        y = F.conv2d(s.x.to(rdt), s.w.to(rdt), s.b.to(rdt) if fused else None, stride=layer.stride, padding=layer.pad)
        if fused:
            if s.r is not None:
                y = y + s.r.to(rdt)
            if layer.relu:
                y = torch.relu(y)
    return y


def run_layers(run: Run, models: Sequence[str], batches: Sequence[int], dtypes: Sequence[str], systems: Sequence[str],
               size: int, max_layers: int | None) -> None:
    """Every distinct conv of each model: the fastres kernel vs cuDNN fused eager vs conv alone."""
    device, l2 = run.device, l2_bytes(run.device)
    peaks = run.results.get("peaks") or {}
    if not all(d in (peaks.get("matmul_tflops") or {}) for d in dtypes):
        run.log("measuring the matrix peak and copy bandwidth ...")
        peaks = measure_peaks(device, dtypes, smoke=run.smoke, timing=run.timing)
        run.results["peaks"] = peaks
        parts = ", ".join(f"{d} {v:.3g} TFLOP/s" for d, v in peaks["matmul_tflops"].items())
        run.log(f"peaks: matmul {parts}; copy {peaks['copy_tb_s']:.3g} TB/s")
        run.save()
    for model_name in models:
        layers = conv_layers(model_name, size)
        if max_layers:
            layers = pick_representative(layers, max_layers)
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            peak = (peaks.get("matmul_tflops") or {}).get(dtype_name)
            for batch in batches:
                for layer in layers:
                    if run.budget.spent():
                        return _budget_note(run, "layers", f"layers {model_name} {dtype_name} batch {batch}")
                    _layer_point(run, model_name, layer, batch, dtype_name, dtype, systems, size, l2, peak, peaks.get("copy_tb_s"))
                    run.save()
                if run.budget.spent():
                    return _budget_note(run, "layers", f"head {model_name} {dtype_name} batch {batch}")
                _head_point(run, model_name, batch, dtype_name, dtype, size, l2)
                run.save()


HEAD_SYSTEMS = ("fastres", "cudnn-eager")


def head_geometry(model_name: str, size: int = 224) -> tuple[int, int, int, int]:
    """(channels, H, W, classes) at the classifier head of torchvision's `model_name`."""
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, model_name)()
    seen = {}

    def record(module, inp, out) -> None:  # a hook that returns something replaces the output
        seen["x"] = tuple(inp[0].shape)

    hook = model.avgpool.register_forward_hook(record)
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, size, size, device="meta"))
    hook.remove()
    _, c, h, w = seen["x"]
    return c, h, w, model.fc.out_features


def _head_point(run, model_name, batch, dtype_name, dtype, size, l2) -> None:
    """The classifier head alone, as the engine runs it (logits in the activation dtype):
    fastres' avgpool_fc vs torch eager's adaptive_avg_pool2d + flatten + linear; where
    fastres' classifier GEMM is split, the same tile unsplit too."""
    from . import kernels as K
    from .kernels.head import fc_config

    device = run.device
    c, h, w, classes = head_geometry(model_name, size)
    name = f"avgpool+fc {c}->{classes} @{h}x{w}"
    nbytes = (batch * c * h * w + classes * c + batch * classes) * dtype.itemsize
    n_sets, flush = rotation_count(nbytes, l2)
    gen = torch.Generator(device=device).manual_seed(zlib.crc32(name.encode()) + batch)
    sets = []
    for _ in range(n_sets):
        x = torch.randn(batch, c, h, w, generator=gen, device=device).relu().to(dtype)
        wt = (torch.randn(classes, c, generator=gen, device=device) * c ** -0.5).to(dtype)
        b = torch.randn(classes, generator=gen, device=device) * 0.1
        sets.append((x.contiguous(memory_format=torch.channels_last), wt, b, b.to(dtype),
                     torch.empty(batch, classes, device=device, dtype=dtype)))
    x0, w0, b0 = sets[0][:3]
    rdt = torch.float64 if (device.type == "cpu" or dtype == torch.float32) else torch.float32
    with baseline_flags(benchmark=False):
        ref = F.linear(x0.to(rdt).mean((2, 3)), w0.to(rdt), b0.to(rdt))
    cfg = fc_config(batch, c, classes, dtype, device)
    fns = {
        "fastres": lambda i, cfg=cfg: K.avgpool_fc(sets[i][0], sets[i][1], sets[i][2], out=sets[i][4], config=cfg),
        "cudnn-eager": lambda i: F.linear(torch.flatten(F.adaptive_avg_pool2d(sets[i][0], 1), 1), sets[i][1], sets[i][3]),
    }
    tol = LAYER_TOL[dtype_name]
    point = {}
    for system in HEAD_SYSTEMS:
        rec = _base_record("head", model_name, batch, dtype_name, system, size)
        rec.update(layer=name, bytes=nbytes, rotation_sets=n_sets, l2_flush=flush, tol=tol)
        if system == "fastres":
            rec.update(config=cfg.name, split_k=cfg.SPLIT_K)
        add_record(run.results, rec)
        point[system] = rec
        tag = f"head  {model_name:9s} {dtype_name:8s} b{batch:<4d} {name:34s} {system:12s}"
        variants = [("", fns[system])]
        if system == "fastres" and cfg.SPLIT_K > 1:
            unsplit = dataclasses.replace(cfg, SPLIT_K=1)
            variants.append(("unsplit_", lambda i: K.avgpool_fc(sets[i][0], sets[i][1], sets[i][2], out=sets[i][4],
                                                                 config=unsplit)))
        try:
            for prefix, fn in variants:
                sets[0][4].fill_(float("nan"))
                with torch.inference_mode(), system_flags(system):
                    rel = rel_error(fn(0), ref)
                rec[prefix + "rel_err"] = _finite_or_none(rel)
                if not rel <= tol:
                    rec.update({prefix + "status": "wrong", prefix + "reason": f"rel error {rel:.3e} > {tol:.1e}: not timed"})
                    run.log(f"{tag} {prefix}WRONG rel {rel:.2e} > {tol:.1e}")
                    break
                with torch.inference_mode(), system_flags(system):
                    stats = measure(fn, n_sets, device=device, options=run.timing,
                                    flush_bytes=2 * l2 if flush else 0, device_time=True)
                if prefix:
                    rec.update(unsplit_median_ms=stats["median_ms"], split_speedup=stats["median_ms"] / rec["median_ms"])
                    run.log(f"{tag} unsplit {stats['median_ms'] * 1e3:7.1f} us: split {cfg.SPLIT_K} ways is "
                            f"{rec['split_speedup']:.2f}x")
                else:
                    _timed_record(rec, stats, batch)
                    run.log(f"{tag} {stats['median_ms'] * 1e3:10.1f} us  rel {rel:.1e}")
        except Exception as exc:
            rec.update(status="error", reason=_first_line(exc))
            run.log(f"{tag} ERROR {rec['reason']}")
    _speedups(point)


def _layer_point(run, model_name, layer, batch, dtype_name, dtype, systems, size, l2, peak, copy_tb_s):
    device = run.device
    flops, nbytes = layer.flops(batch), layer.bytes(batch, dtype.itemsize)
    n_sets, flush = rotation_count(nbytes, l2)
    gen = torch.Generator(device=device).manual_seed(zlib.crc32(layer.name.encode()) + batch)
    try:
        sets = layer_inputs(layer, batch, dtype, device, n_sets, gen)
    except torch.cuda.OutOfMemoryError as exc:
        for system in systems:
            rec = _base_record("layer", model_name, batch, dtype_name, system, size)
            rec.update(layer=layer.name, tflops=None, status="error", reason=_first_line(exc))
            add_record(run.results, rec)
        _free(device)
        return
    refs = {}
    floor_ms = None
    if peak and copy_tb_s:
        floor_ms = max(flops / (peak * 1e12), nbytes / (copy_tb_s * 1e12)) * 1e3
    point = {}
    for system in systems:
        rec = _base_record("layer", model_name, batch, dtype_name, system, size)
        rec.update(layer=layer.name, tflops=None, uses=list(layer.uses), gflop=flops / 1e9, bytes=nbytes,
                   floor_ms=floor_ms, rotation_sets=n_sets, l2_flush=flush)
        add_record(run.results, rec)
        point[system] = rec
        tag = f"layer {model_name:9s} {dtype_name:8s} b{batch:<4d} {layer.name:34s} {system:12s}"
        try:
            fused = system != "cudnn-conv"
            if fused not in refs:
                refs[fused] = layer_reference(layer, sets[0], fused=fused, device=device)
            fn = layer_callable(system, layer, sets)
            sets[0].out.fill_(float("nan"))  # unwritten elements must fail the check
            with torch.inference_mode(), system_flags(system):
                rel = rel_error(fn(0), refs[fused])
            tol = LAYER_TOL[dtype_name]
            rec.update(rel_err=_finite_or_none(rel), tol=tol)
            if not rel <= tol:
                rec.update(status="wrong", reason=f"rel error {rel:.3e} > {tol:.1e}: not timed")
                run.log(f"{tag} WRONG rel {rel:.2e} > {tol:.1e}")
                continue
            with torch.inference_mode(), system_flags(system):
                stats = measure(fn, n_sets, device=device, options=run.timing, flush_bytes=2 * l2 if flush else 0,
                                device_time=True)
            _timed_record(rec, stats, batch)
            rec["tflops"] = flops / (stats["median_ms"] * 1e-3) / 1e12
            if peak:
                rec["pct_peak"] = 100.0 * rec["tflops"] / peak
            if floor_ms:
                rec["pct_floor"] = 100.0 * floor_ms / stats["median_ms"]
            run.log(f"{tag} {stats['median_ms'] * 1e3:10.1f} us  {rec['tflops']:7.2f} TFLOP/s  rel {rel:.1e}")
            if system == "fastres":
                _split_comparison(run, rec, layer, sets, refs[True], n_sets, flush, l2, tag)
        except Exception as exc:
            rec.update(status="error", reason=_first_line(exc))
            run.log(f"{tag} ERROR {rec['reason']}")
            if device.type == "cuda" and isinstance(exc, torch.cuda.OutOfMemoryError):
                _free(device)
    _speedups(point)
    del sets, refs
    if device.type == "cuda" and batch >= 32:
        _free(device)


def _split_comparison(run, rec, layer, sets, ref, n_sets, flush, l2, tag) -> None:
    """Record fastres' config; where it splits the K loop, also check and time the same tile
    unsplit, side by side, so every run measures what split-K gains layer by layer."""
    cfg = fastres_layer_config(layer, sets[0])
    rec.update(config=cfg.name, split_k=cfg.SPLIT_K)
    if cfg.SPLIT_K <= 1:
        return
    fn = layer_callable("fastres", layer, sets, config=dataclasses.replace(cfg, SPLIT_K=1))
    sets[0].out.fill_(float("nan"))
    with torch.inference_mode():
        rel = rel_error(fn(0), ref)
    if not rel <= rec["tol"]:
        rec["unsplit_status"] = f"wrong: rel error {rel:.3e} > {rec['tol']:.1e}"
        run.log(f"{tag} unsplit WRONG rel {rel:.2e}")
        return
    with torch.inference_mode():
        stats = measure(fn, n_sets, device=run.device, options=run.timing, flush_bytes=2 * l2 if flush else 0,
                        device_time=True)
    rec.update(unsplit_median_ms=stats["median_ms"], split_speedup=stats["median_ms"] / rec["median_ms"])
    run.log(f"{tag} unsplit {stats['median_ms'] * 1e3:7.1f} us: split {cfg.SPLIT_K} ways is "
            f"{rec['split_speedup']:.2f}x")


def checked_forward(model_name: str, size: int, batch: int, dtype_name: str, device: torch.device, log=print) -> bool:
    """One fastres forward without CUDA graphs, checked against torchvision (for running under
    compute-sanitizer)."""
    dtype = DTYPES[dtype_name]
    model32 = build_model(model_name, device, calib_size=min(size, 64))
    import fastres

    fast = fastres.from_torchvision(model32, dtype=dtype, cuda_graph=False)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7)).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = fast(x)
        _sync(device)
        with baseline_flags(benchmark=False):
            ref_model = model32.double() if device.type == "cpu" else model32
            ref = ref_model(x.to(next(ref_model.parameters()).dtype))
            eager = copy.deepcopy(model32).to(dtype=dtype, memory_format=torch.channels_last)
            torch_rel = rel_error(eager(x), ref)
    rel = rel_error(out, ref)
    tol = e2e_tolerance(dtype_name, torch_rel, system="fastres")
    ok = rel <= tol
    log(f"forward {model_name} {size}x{size} batch {batch} {dtype_name}: rel {rel:.2e} (tol {tol:.1e}, torch's own {torch_rel:.2e}) "
        f"{'ok' if ok else 'WRONG'}")
    return ok


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------

ACTIONS = ("all", "e2e", "layers", "report", "summary", "forward")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Benchmark fastres against cuDNN: 'e2e' (whole networks), 'layers' (every distinct conv), "
        "'all' (both, the default), 'report RESULTS.json' (markdown + plot from a results file), "
        "'summary RESULTS.json' (a short text overview), "
        "'forward' (one checked forward without CUDA graphs, e.g. under compute-sanitizer). "
        "--smoke runs the harness through triton's CPU interpreter on tiny shapes (not a performance figure)."
    )
    parser.add_argument("action", nargs="?", default="all", choices=ACTIONS, help="what to run (default: all)")
    parser.add_argument("results", nargs="?", default=None, help="for 'report' and 'summary': the results JSON file")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes through the interpreter on the CPU; labelled, never a performance figure")
    parser.add_argument("--out", default=None, help="folder for the results file, its .md and .png (default bench/results; smoke: a temporary folder)")
    parser.add_argument("--models", default=None, help=f"comma list (e2e default {','.join(E2E_MODELS)}; layers default {','.join(LAYER_MODELS)})")
    parser.add_argument("--batches", default=None, help=f"comma list (e2e default {','.join(map(str, E2E_BATCHES))}; layers default {','.join(map(str, LAYER_BATCHES))})")
    parser.add_argument("--dtypes", default=None, help="comma list of float16, bfloat16, float32 (default float16,bfloat16)")
    parser.add_argument("--size", type=int, default=None, help="input height = width (default 224)")
    parser.add_argument("--systems", default=None, help=f"e2e systems, comma list of {','.join(ALL_E2E_SYSTEMS)} (default: the first four)")
    parser.add_argument("--layer-systems", default=None, help=f"per-layer systems, comma list of {','.join(LAYER_SYSTEMS)} (default: all)")
    parser.add_argument("--tune", action="store_true",
                        help="fastres measures every conv's tile configs on its first forward (cached on disk)")
    parser.add_argument("--max-autotune", action="store_true", help="also time torch.compile(mode='max-autotune') (compiles for minutes)")
    parser.add_argument("--max-layers", type=int, default=None, help="per model, at most this many distinct convs (the most varied first)")
    parser.add_argument("--warmup-ms", type=float, default=None, help="warm-up per measurement (default 25)")
    parser.add_argument("--rep-ms", type=float, default=None, help="timed repetitions fill this long (default 100)")
    parser.add_argument("--min-reps", type=int, default=None, help="at least this many timed repetitions (default 10)")
    parser.add_argument("--max-reps", type=int, default=None, help="at most this many timed repetitions (default 1000)")
    parser.add_argument("--budget-s", type=float, default=None, help="stop starting measurements after this many seconds (the file says so)")
    parser.add_argument("--no-plot", action="store_true", help="skip the matplotlib plot")


def _csv(value: str | None, default: Sequence, what: str, convert=str) -> list:
    if value is None:
        return list(default)
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        from .cli import UserError

        raise UserError(f"--{what} is empty")
    try:
        return [convert(v) for v in items]
    except ValueError as exc:
        from .cli import UserError

        raise UserError(f"--{what}: {exc}") from None


def _dtype_name(v: str) -> str:
    name = _DTYPE_ALIASES.get(v.lower())
    if name is None:
        raise ValueError(f"unknown dtype {v!r} (choose from float16, bfloat16, float32)")
    return name


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError(f"{v} is not a positive integer")
    return n


def _choice(choices: Sequence[str]):
    def check(v: str) -> str:
        if v not in choices:
            raise ValueError(f"unknown name {v!r} (choose from {', '.join(choices)})")
        return v
    return check


def _interpreter_child(args: argparse.Namespace) -> int:
    """Run the smoke in a fresh interpreter with TRITON_INTERPRET=1 set before triton loads."""
    payload = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None))) and not k.startswith("_")}
    env = dict(os.environ, TRITON_INTERPRET="1", FASTRES_BENCH_ARGS=json.dumps(payload))
    code = "import sys; from fastres.benchmark import _child_main; sys.exit(_child_main())"
    return subprocess.run([sys.executable, "-c", code], env=env).returncode


def _child_main() -> int:
    args = argparse.Namespace(**json.loads(os.environ["FASTRES_BENCH_ARGS"]))
    from .cli import UserError

    try:
        return main(args)
    except UserError as exc:
        print(f"fastres bench: error: {exc}", file=sys.stderr)
        return 2


def main(args: argparse.Namespace) -> int:
    from .cli import UserError
    from .kernels import interpreting

    action = args.action
    if action in ("report", "summary"):
        if not args.results:
            raise UserError(f"'fastres bench {action}' needs the results JSON file: fastres bench {action} bench/results/CARD-DATE.json")
        path = Path(args.results)
        try:
            results = load_results(path)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc)) from None
        if action == "summary":
            print(summary_text(results), end="")
            return 0
        md, png = write_report(path, results, plot=not args.no_plot)
        print(render_markdown(results))
        print(f"wrote {md}" + (f" and {png}" if png else ""))
        return 0
    if args.results:
        raise UserError(f"unexpected argument {args.results!r} (only 'report' and 'summary' take a results file)")

    smoke = bool(args.smoke)
    e2e_models = _csv(args.models, SMOKE["models"] if smoke else E2E_MODELS, "models", _choice(E2E_MODELS))
    layer_models = _csv(args.models, SMOKE["models"] if smoke else LAYER_MODELS, "models", _choice(E2E_MODELS))
    e2e_batches = _csv(args.batches, SMOKE["e2e_batches"] if smoke else E2E_BATCHES, "batches", _positive_int)
    layer_batches = _csv(args.batches, SMOKE["layer_batches"] if smoke else LAYER_BATCHES, "batches", _positive_int)
    e2e_dtypes = _csv(args.dtypes, SMOKE["e2e_dtypes"] if smoke else GPU_DTYPES, "dtypes", _dtype_name)
    layer_dtypes = _csv(args.dtypes, SMOKE["layer_dtypes"] if smoke else GPU_DTYPES, "dtypes", _dtype_name)
    if smoke and "bfloat16" in e2e_dtypes + layer_dtypes:
        raise UserError("bfloat16 is GPU only: triton's CPU interpreter computes bf16 dot products wrongly (triton issue 11584)")
    size = args.size or (SMOKE["size"] if smoke else 224)
    if size < 32:
        raise UserError(f"--size must be >= 32 (ResNets downsample by 32), got {size}")
    systems = _csv(args.systems, E2E_SYSTEMS, "systems", _choice(ALL_E2E_SYSTEMS))
    if args.max_autotune and MAX_AUTOTUNE_SYSTEM not in systems:
        systems.append(MAX_AUTOTUNE_SYSTEM)
    layer_systems = _csv(args.layer_systems, LAYER_SYSTEMS, "layer-systems", _choice(LAYER_SYSTEMS))
    max_layers = args.max_layers if args.max_layers is not None else (SMOKE["max_layers"] if smoke else None)
    base = SMOKE_TIMING if smoke else TimingOptions()
    timing = TimingOptions(
        warmup_ms=args.warmup_ms if args.warmup_ms is not None else base.warmup_ms,
        rep_ms=args.rep_ms if args.rep_ms is not None else base.rep_ms,
        min_warmup=base.min_warmup,
        min_reps=args.min_reps if args.min_reps is not None else base.min_reps,
        max_reps=args.max_reps if args.max_reps is not None else base.max_reps,
    )
    if timing.min_reps < 1 or timing.max_reps < timing.min_reps:
        raise UserError(f"need 1 <= --min-reps <= --max-reps, got {timing.min_reps} and {timing.max_reps}")

    # the options are valid: now the device (the smoke runs in a child with the interpreter on)
    if smoke and not interpreting():
        return _interpreter_child(args)
    if smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        raise UserError("no CUDA device: 'fastres bench' times GPUs; 'fastres bench --smoke' exercises the harness on the CPU")
    if interpreting() and not smoke:
        raise UserError("TRITON_INTERPRET is set: unset it to time real kernels, or pass --smoke")

    if action == "forward":  # no results file: a correctness probe (e.g. under compute-sanitizer)
        if smoke:
            print(SMOKE_LABEL, flush=True)
        ok = True
        for model_name in e2e_models:
            for dtype_name in e2e_dtypes:
                for batch in e2e_batches:
                    ok &= checked_forward(model_name, size, batch, dtype_name, device, log=lambda m: print(m, flush=True))
        return 0 if ok else 1

    if args.out:
        out_dir = Path(args.out)
    elif smoke:
        out_dir = Path(tempfile.mkdtemp(prefix="fastres-smoke-"))
    else:
        out_dir = Path("bench") / "results"
    FASTRES_OPTIONS["tune"] = bool(args.tune)
    env = environment(device, smoke=smoke)
    env["fastres_tuned"] = bool(args.tune) and device.type == "cuda"
    path = results_path(out_dir, env)
    results = open_results(path, env)
    results["timing"] = (
        f"median of >= {timing.min_reps} repetitions (each its own CUDA event pair) after >= {timing.warmup_ms:g} ms of warm-up; "
        f"inputs rotated over sets totalling > 2x L2 (else L2 flushed per repetition)" if device.type == "cuda"
        else f"host clock, {timing.min_reps} repetition(s) per point, CPU interpreter"
    )
    # a part run again replaces its note of an earlier run merged into this file
    if not isinstance(results.get("incomplete"), dict):
        results.pop("incomplete", None)
    for part in (("layers", "e2e") if action == "all" else (action,)):
        (results.get("incomplete") or {}).pop(part, None)
    run = Run(device, smoke, path, results, timing, Budget(args.budget_s), log=lambda s: print(s, flush=True))
    banner = f"{SMOKE_LABEL}\n" if smoke else ""
    print(f"{banner}fastres bench {action} on {env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; "
          f"results: {path}", flush=True)

    if action in ("all", "layers"):
        run_layers(run, layer_models, layer_batches, layer_dtypes, layer_systems, size, max_layers)
    if action in ("all", "e2e") and not run.budget.spent():
        run_e2e(run, e2e_models, e2e_batches, e2e_dtypes, systems, size)
    elif action in ("all", "e2e"):
        _budget_note(run, "e2e", "the per-layer benchmark")
    run.save()
    problems = validate_results(results)
    if problems:
        print("results schema problems: " + "; ".join(problems[:5]), file=sys.stderr)
    md, png = write_report(path, results, plot=not args.no_plot)
    print()
    print(render_markdown(results))
    bad = [r for r in results["records"] if r["system"] == "fastres" and r.get("status") in ("wrong", "error")]
    print(f"wrote {path}, {md.name}" + (f", {png.name}" if png else "") + f" ({run.budget.elapsed():.0f} s)")
    if smoke:
        print(SMOKE_LABEL)
    if bad:
        print(f"fastres failed {len(bad)} check(s): " + "; ".join(
            f"{r['model']} {r.get('layer', '')} b{r['batch']} {r['dtype']}: {r.get('reason')}" for r in bad[:5]))
        return 1
    return 1 if problems else 0


def run_cli(argv: Sequence[str] | None = None) -> int:
    """`python -m fastres.benchmark ...` (the same as `fastres bench ...`)."""
    from .cli import run_subcommand

    return run_subcommand("bench", None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(run_cli())
