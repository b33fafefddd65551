"""`fastres run`: build a ResNet, run one batch through the Triton forward, check it against
torchvision in float64, print parity, top-5 classes per image and the time per batch."""
from __future__ import annotations

import argparse
import contextlib
import sys
import time

DTYPE_NAMES = ("float16", "bfloat16", "float32", "int8", "float8_e4m3fn")
QUANT_NAMES = ("int8", "float8_e4m3fn")
# A quantized engine against the torch reference of its integer math (fastres.quant.reference):
# equal in the interpreter, apart by roundings that fused multiply-adds move on a GPU.
QUANT_BOUND = 1e-2
# Interpreter defaults: small enough that resnet50 finishes within a minute on 2 cores.
CPU_SIZE, CPU_BATCH = 64, 2
GPU_SIZE, GPU_BATCH = 224, 8


def configure(p: argparse.ArgumentParser) -> None:
    from .plan import ARCHS

    p.add_argument("--arch", choices=sorted(ARCHS), default=None, help="architecture (default resnet50; with --weights, the file's)")
    p.add_argument("--weights", metavar="FILE", help="a file written by `fastres convert` (default: calibrated random weights)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"images per batch (default {GPU_BATCH} on a GPU and with --plan, {CPU_BATCH} on the CPU)")
    p.add_argument("--size", type=int, default=None,
                   help=f"image height and width (default {GPU_SIZE} on a GPU and with --plan, {CPU_SIZE} on the CPU)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="engine dtype (default float16; with --weights, the file's); int8 / float8_e4m3fn: a quantized "
                        "file, or the random weights quantized by fastres.quantize on random calibration batches")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and images")
    p.add_argument("--iters", type=int, default=20, help="timed repetitions on a GPU (median reported)")
    p.add_argument("--tune", action="store_true", help="on a GPU: measure each conv's tile configs first (cached on disk)")
    p.add_argument("--plan", action="store_true",
                   help="print the launch schedule (kernels, buffers, tile configs, K splits) for this arch, batch, "
                        f"size and dtype on this device, and exit without running it (a plan launches nothing: "
                        f"{GPU_SIZE}x{GPU_SIZE}, batch {GPU_BATCH} by default, on a CPU too)")


@contextlib.contextmanager
def _step(text: str):
    """One long step on stderr: "text ... 1.2 s" on a terminal; elsewhere (a log file) its
    start, a line every few seconds while it runs, and its end, each on a line of its own."""
    from .progress import heartbeat, is_terminal

    tty = is_terminal(sys.stderr)
    print(f"{text} ...", end="" if tty else "\n", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        with heartbeat(text):
            yield
    except BaseException:
        if tty:  # whatever is said about the failure goes on a line of its own
            print(file=sys.stderr, flush=True)
        raise
    took = f"{time.perf_counter() - t:.1f} s"
    print(f" {took}" if tty else f"{text}: done in {took}", file=sys.stderr, flush=True)


def _median_ms(fn, iters: int) -> float:
    import torch

    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _print_plan(args, device, batch: int, size: int) -> int:
    """The schedule the engine would run for this input, planned without running a kernel."""
    import torch

    from .errors import UserError
    from .device import DeviceInfo
    from .schedule import build_schedule

    shape = (batch, 3, size, size)
    if args.weights:
        from . import weights as conv

        try:
            fast = conv.load(args.weights, device=device)
        except (conv.WeightsError, FileNotFoundError) as exc:
            raise UserError(str(exc)) from None
        print(fast.schedule(shape))
        return 0
    from .plan import UnsupportedModelError, arch_convs
    from .precision import Quantized

    arch, dtype, quantized = args.arch or "resnet50", args.dtype or "float16", None
    if dtype in QUANT_NAMES:  # every conv in 8 bits, as fastres.quantize makes it by default
        quantized, dtype = Quantized(getattr(torch, dtype), {c.name for c in arch_convs(arch)}), "float16"
    try:
        print(build_schedule(arch, shape, getattr(torch, dtype), DeviceInfo.of(device), quantized=quantized))
    except UnsupportedModelError as exc:
        raise UserError(str(exc)) from None
    return 0


def _labels(num_classes: int, weights: str | None) -> list[str]:
    """Class names as `fastres predict` gives them: ImageNet's for 1000 classes (those of the
    torchvision weights a converted file records), else the index."""
    from .predict.labels import class_labels

    name = None
    if weights:
        from .weights import read_metadata

        name = read_metadata(weights).get("torchvision_weights")
    return class_labels(num_classes, None, name)


def main(args) -> int:
    import torch

    from .errors import UserError
    from .kernels import interpreting

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not interpreting():
        raise UserError("no CUDA device and TRITON_INTERPRET is not set: run `TRITON_INTERPRET=1 fastres run`")
    device = torch.device("cuda" if on_gpu else "cpu")
    # A plan launches nothing, so its size costs nothing: the GPU's defaults everywhere. A run
    # through the interpreter is slow: smaller defaults there.
    full = on_gpu or args.plan
    size = args.size if args.size is not None else (GPU_SIZE if full else CPU_SIZE)
    batch = args.batch if args.batch is not None else (GPU_BATCH if full else CPU_BATCH)
    if batch < 1 or size < 1 or args.iters < 1:
        raise UserError(f"--batch, --size and --iters must be >= 1, got {batch}, {size} and {args.iters}")
    if args.dtype == "bfloat16" and not on_gpu:
        raise UserError("bfloat16 needs a GPU: triton's CPU interpreter multiplies bf16 wrongly (triton issue 11584)")
    if args.plan:
        return _print_plan(args, device, batch, size)
    if on_gpu:
        print(f"device: {torch.cuda.get_device_name(device)}")
    else:
        print(f"no CUDA device: running through triton's CPU interpreter at {size}x{size}, batch {batch} "
              "(times are not performance figures)")

    from . import weights as conv
    from .build import from_torchvision
    from .models import random_resnet, unfolded
    from .plan import UnsupportedModelError

    if args.weights:
        with _step(f"loading {args.weights}"):
            try:
                fast = conv.load(args.weights, device=device, tune=args.tune and on_gpu)
            except (conv.WeightsError, FileNotFoundError) as exc:
                raise UserError(str(exc)) from None
        if fast.num_classes is None:
            raise UserError(f"{args.weights} holds a detection or segmentation trunk: `fastres run` runs classifiers")
        if not isinstance(fast._arch, str):
            raise UserError(f"{args.weights} holds {fast.arch}, which torchvision does not build: `fastres run` checks "
                            "the engine against torchvision's model (classify images with `fastres predict --weights`)")
        if args.arch and args.arch != fast.arch:
            raise UserError(f"--arch {args.arch} contradicts {args.weights}, which holds {fast.arch}")
        held = fast.quantized.dtype if fast.quantized is not None else fast.dtype
        if args.dtype and getattr(torch, args.dtype) != held:
            raise UserError(f"--dtype {args.dtype} contradicts {args.weights}, which holds {str(held)[6:]}")
        arch, dtype = fast.arch, fast.dtype
        # The file holds folded weights: torchvision with identity BatchNorms computes the same
        # (a quantized file's: its dequantized weights, the float model it stands for).
        from .quant.quantize import float_params

        model = unfolded(arch, float_params(fast), fast.num_classes)
        source = args.weights
    else:
        arch = args.arch or "resnet50"
        dtype = torch.float16 if args.dtype in QUANT_NAMES else getattr(torch, args.dtype or "float16")
        with _step(f"building {arch} with calibrated random weights (seed {args.seed})"):
            model = random_resnet(arch, seed=args.seed)
        with _step(f"folding BatchNorm and packing {str(dtype)[6:]} weights"):
            try:
                fast = from_torchvision(model, dtype=dtype, device=device, tune=args.tune and on_gpu)
            except UnsupportedModelError as exc:  # e.g. an arch whose convs these kernels lack
                raise UserError(str(exc)) from None
        source = "random weights"
        if args.dtype in QUANT_NAMES:
            from .quant.quantize import quantize

            g = torch.Generator().manual_seed(args.seed + 2)
            calibration = [torch.randn(batch, 3, size, size, generator=g) for _ in range(4)]
            with _step(f"quantizing to {args.dtype} (entropy calibration on 4 random batches)"):
                fast = quantize(model, calibration, dtype=getattr(torch, args.dtype), device=device, progress=False)
            source = f"random weights, {args.dtype}"
    if dtype == torch.bfloat16 and not on_gpu:
        raise UserError("bfloat16 needs a GPU: triton's CPU interpreter multiplies bf16 wrongly (triton issue 11584)")

    g = torch.Generator().manual_seed(args.seed + 1)
    images = torch.randn(batch, 3, size, size, generator=g)
    x = images.to(device, dtype)
    first = "first forward (compiles kernels, builds buffers" + (", tunes" if args.tune and on_gpu else "")
    with _step(first + (", captures a CUDA graph)" if on_gpu else ")")):
        logits = fast(x)
        if on_gpu:
            torch.cuda.synchronize()
    if on_gpu:
        fast_ms = _median_ms(lambda: fast(x), args.iters)
    else:
        with _step("second forward (the timed one)"):
            t = time.perf_counter()
            logits = fast(x)
            fast_ms = (time.perf_counter() - t) * 1e3

    ref_device = device if on_gpu else torch.device("cpu")
    with _step("torchvision reference in float64"), torch.inference_mode():
        ref = model.to(ref_device, torch.float64)(images.to(ref_device, torch.float64)).cpu()
        model.to(device, dtype).to(memory_format=torch.channels_last)
        theirs = model(x.contiguous(memory_format=torch.channels_last)).cpu()
    out = logits.cpu().double()
    rel = ((out - ref).norm() / ref.norm()).item()
    torch_rel = ((theirs.double() - ref).norm() / ref.norm()).item()
    bound = {torch.float32: 1e-4, torch.float16: min(max(5e-3, 2 * torch_rel), 2e-2),
             torch.bfloat16: min(max(2e-2, 2 * torch_rel), 5e-2)}[dtype]
    err = (out - ref).abs()
    top1 = (out.argmax(1) == ref.argmax(1)).float().mean().item()

    if fast.quantized is not None:
        print(f"{arch} ({source}), {str(fast.quantized.dtype)[6:]} ({len(fast.quantized.layers)} layers; float layers "
              f"{str(dtype)[6:]}), batch {batch}, {size}x{size}")
        print(f"against the float model it stands for (float64): rel L2 {rel:.2e}, top-1 agreement {top1:.0%}")
        from .quant.reference import run_schedule

        # On the input the engine was given (the images rounded to its float dtype): the stem
        # quantizes those values, and a code moved by that rounding moves every later layer.
        with _step("torch reference of the quantized integer math"):
            qref = run_schedule(fast.schedule(x), {k: v.cpu() for k, v in fast.params().items()}, x.float().cpu(),
                                ranges=fast.ranges).double()
        rel, bound = ((out - qref).norm() / qref.norm()).item(), QUANT_BOUND
        err = (out - qref).abs()
        top1 = (out.argmax(1) == qref.argmax(1)).float().mean().item()
        print(f"parity vs that reference: rel L2 {rel:.2e} (bound {bound:.0e}), max |err| {err.max().item():.3e}, "
              f"top-1 agreement {top1:.0%}")
    else:
        print(f"{arch} ({source}), {str(dtype)[6:]}, batch {batch}, {size}x{size}")
        print(f"parity vs torchvision float64: rel L2 {rel:.2e} (torchvision {str(dtype)[6:]}: {torch_rel:.2e}; bound "
              f"{bound:.1e}), max |err| {err.max().item():.3e}, top-1 agreement {top1:.0%}")
    top5 = out.topk(min(5, out.shape[1]), dim=1).indices
    labels = _labels(fast.num_classes, args.weights)
    for i in range(batch):
        classes = ", ".join(f"{labels[c]} ({c})" if labels[c] != str(c) else str(c) for c in top5[i].tolist())
        print(f"  image {i}: top-5 classes {classes}")
    if on_gpu:
        with torch.inference_mode():
            saved = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
            try:
                xc = x.contiguous(memory_format=torch.channels_last)
                model(xc)
                eager_ms = _median_ms(lambda: model(xc), args.iters)
            finally:
                torch.backends.cudnn.benchmark = saved
        print(f"time per batch: fastres {fast_ms:.3f} ms, torchvision eager (cuDNN) {eager_ms:.3f} ms "
              f"({eager_ms / fast_ms:.2f}x)")
    else:
        print(f"time per batch: {fast_ms / 1e3:.1f} s through the interpreter (not a performance figure)")
    if not rel <= bound:
        print(f"FAILED: rel L2 {rel:.2e} exceeds the bound {bound:.1e}", file=sys.stderr)
        return 1
    return 0
