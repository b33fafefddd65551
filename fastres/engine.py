"""The engine: a torch.nn.Module whose forward is fastres' Triton kernels only.

Per input shape it plans a launch schedule once (`fastres.schedule`: plain
data, printable with `ResNet.schedule(x)`), tunes its tile configs if asked, compiles every
kernel ahead, and binds it to an arena (`fastres.arena`: buffers assigned by liveness, and on
CUDA a captured graph). A repeated forward at a known shape allocates nothing but its output.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
import warnings
from typing import Mapping, Sequence

import torch

from . import kernels as K
from . import ops
from .arena import Arena
from .device import DeviceInfo
from .kernels.config import tile_of
from .plan import (LAYERS, NO_DILATION, ArchSpec, UnsupportedModelError, arch_blocks, arch_convs, arch_label, arch_spec,
                   check_dilate, check_params, check_returns, param_shapes, returns_depth)
from .precision import CLASSIFIER, QUANT_DTYPES, Quantized, Ranges
from .schedule import STEM, Schedule, Step, build_schedule
from .streams import owned_stream
from .tuning import Tuner, cache_key

_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# torchvision's ImageNet normalization (every torchvision ResNet's weights use it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENGINE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# triton's interpreter patches triton.language while it runs a kernel: not thread-safe.
_INTERPRETER_LOCK = threading.Lock()


class ResNet(torch.nn.Module):
    """A ResNet forward computed by fastres' Triton kernels.

    Build with `fastres.from_torchvision(model)` (or from_timm, from_transformers) or
    `fastres.load(path)`; `arch` is a torchvision name or a `fastres.ArchSpec`. Call with x
    [N, 3, H, W] float32/float16/bfloat16 (NCHW or channels_last) on the engine's device;
    returns logits [N, num_classes] in x's dtype. Internally activations are NHWC in
    `dtype`, BatchNorm is folded, accumulation is float32. `forward_pixels(x)` takes uint8
    pixels instead and normalizes them inside the stem.

    A trunk (`returns` given instead of num_classes: a mapping layer -> name, as torchvision's
    IntermediateLayerGetter takes) has no avgpool/fc and stops after the last returned layer;
    it returns an OrderedDict name -> [N, C, H, W] feature (channels_last, x's dtype), in
    execution order, as IntermediateLayerGetter does. dilate: torchvision's
    replace_stride_with_dilation (three bools for layer2..layer4).

    A quantized engine (made by `fastres.quantize`) computes the convs `quantized.layers` (and
    the classifier, where "fc" is one of them) in `quantized.dtype` (int8 or float8_e4m3fn:
    their weights in that dtype with per-output-channel scales "<layer>.weight_scale"), with
    per-tensor activation ranges `ranges` (absolute max by the name of the layer that writes
    each activation, "input" for the image, "pool" for the pooled features an 8-bit classifier
    quantizes); every other launch computes in `dtype` (see fastres.precision).
    """

    def __init__(
        self,
        arch: "str | ArchSpec",
        params: Mapping[str, torch.Tensor],
        *,
        num_classes: int | None = None,
        returns=None,
        dilate=NO_DILATION,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cuda",
        cuda_graph: bool = True,
        tune: "bool | Tuner" = False,
        max_shapes: int = 16,
        quantized: Quantized | None = None,
        ranges: Mapping[str, float] | None = None,
    ):
        super().__init__()
        # A torchvision name, or the ArchSpec of another ResNet (timm's, transformers').
        self.spec: ArchSpec = arch_spec(arch)
        if dtype not in ENGINE_DTYPES:
            raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
        self.returns = check_returns(returns)
        if (num_classes is None) == (self.returns is None):
            raise ValueError("give num_classes (a classifier) or returns (a trunk's outputs), not both or neither")
        self.dilate = check_dilate(dilate)
        self.depth = returns_depth(self.returns)
        arch_blocks(arch, self.dilate, self.depth)  # refuses a dilation torchvision never builds
        self.arch, self.dtype = arch_label(arch), dtype
        self._arch = arch
        self.num_classes = None if num_classes is None else int(num_classes)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {self.device} was asked for but no CUDA device is available; on a CPU fastres runs "
                "only through triton's interpreter: device='cpu' with TRITON_INTERPRET=1"
            )
        if self.device.type == "cpu" and dtype == torch.bfloat16:
            raise TypeError("bfloat16 needs a GPU: triton's CPU interpreter multiplies bf16 wrongly (triton issue 11584)")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        # Read now: a card older than every target is refused here, not at the first launch.
        self._device_info: DeviceInfo | None = DeviceInfo.of(self.device) if self.device.type == "cuda" else None
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        if tune is True:
            if self.device.type != "cuda":
                raise ValueError("tune=True measures kernels on a GPU; on the CPU pass a Tuner with its own timer")
            tune = Tuner()
        self.tuner: Tuner | None = tune or None
        self.quantized, self.ranges = self._check_quantized(quantized, ranges)
        self.report = None  # a quantized engine's calibration report (fastres.quantize sets it)
        check_params(params, self._arch, self.num_classes, dtype, self.depth, quantized)
        self._params: dict[str, torch.Tensor] = {}
        for key in param_shapes(self._arch, self.num_classes, self.depth, quantized):
            t = params[key]
            fmt = torch.channels_last if t.dim() == 4 else torch.contiguous_format
            with torch.inference_mode(False):
                self._params[key] = t.to(self.device).contiguous(memory_format=fmt)
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
        # Input shapes kept built; the least recently used beyond this is freed.
        self.max_shapes = int(max_shapes)
        self._arenas: collections.OrderedDict[tuple, Arena] = collections.OrderedDict()
        # (batch, layer) -> the configs that layer has been built with, first first (see schedule()).
        self._ran: dict[tuple[int, str], dict] = {}
        self._arenas_lock = threading.Lock()
        self._build_lock = threading.Lock()
        # The name torch.compile / torch.export call this engine by (fastres.ops).
        self._op_handle = ops.register(self)

    def _check_quantized(self, quantized: Quantized | None, ranges) -> tuple[Quantized | None, Ranges | None]:
        if quantized is None:
            if ranges is not None:
                raise ValueError("ranges are for a quantized engine: give quantized= too")
            return None, None
        if not isinstance(quantized, Quantized):
            raise TypeError(f"quantized must be a fastres.precision.Quantized, got {type(quantized).__name__}")
        layers = {c.name for c in arch_convs(self._arch, self.dilate, self.depth)}
        if self.num_classes is not None:
            layers.add(CLASSIFIER)
        unknown = sorted(quantized.layers - layers)
        if unknown:
            what = "convs (or its classifier, 'fc')" if self.num_classes is not None else \
                "convs (a trunk has no classifier)"
            raise UnsupportedModelError(f"quantized layers {unknown} are not {what} of {self.arch}")
        if ranges is None:
            raise ValueError("a quantized engine needs its activation ranges (ranges=)")
        if self._device_info is not None:
            self._device_info.check_dtype(quantized.dtype)
        return quantized, Ranges(quantized.dtype, dict(ranges))

    def trunk(self, returns) -> "ResNet":
        """A trunk engine returning `returns` (layer -> name, as the constructor takes) over this
        engine's parameters and options; see `trunk_of`."""
        return trunk_of(self._arch, self._params, returns, dilate=self.dilate, dtype=self.dtype, device=self.device,
                        cuda_graph=self.cuda_graph, tune=self.tuner or False, max_shapes=self.max_shapes,
                        quantized=self.quantized, ranges=None if self.ranges is None else self.ranges.amax)

    def quantization_report(self):
        """The per-layer report of the calibration that made this engine (fastres.quantize):
        each quantized tensor's scale and clipped fraction, each layer's error against float."""
        if self.quantized is None:
            raise ValueError("this engine is not quantized (fastres.quantize makes one)")
        if self.report is None:
            raise ValueError("this quantized engine was loaded without its calibration report")
        return self.report

    def _compute_dtype(self, step: Step) -> torch.dtype:
        return step.precision.compute if step.precision is not None and step.kernel != "max_pool2d" else self.dtype

    # nn.Module plumbing: the packed parameters are tied to one device and dtype.
    def _apply(self, fn, recurse=True):
        raise RuntimeError(
            "a fastres.ResNet is built for one device and dtype; rebuild it with "
            "fastres.from_torchvision(model, dtype=..., device=...) or fastres.load(path, device=...)"
        )

    def params(self) -> dict[str, torch.Tensor]:
        """The folded, packed parameters (what `fastres.convert` writes)."""
        return dict(self._params)

    def extra_repr(self) -> str:
        what = (f"num_classes={self.num_classes}" if self.returns is None else
                "returns={" + ", ".join(f"{layer!r}: {name!r}" for layer, name in self.returns) + "}")
        dilated = [LAYERS[i + 1] for i, d in enumerate(self.dilate) if d]
        quant = ("" if self.quantized is None else
                 f", quantized={self.quantized.dtype} ({len(self.quantized.layers)} layers)")
        return (f"arch={self.arch}, {what}{', dilated=' + '+'.join(dilated) if dilated else ''}, dtype={self.dtype}{quant}, "
                f"device={self.device}")

    # -- input checks -----------------------------------------------------------------
    def _check_input(self, x, dtypes=_INPUT_DTYPES, fake: bool = False) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must be [N, 3, H, W] (rank 4), got rank {x.dim()} with shape {tuple(x.shape)}")
        if x.shape[1] != 3:
            raise ValueError(f"x must have 3 channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if x.dtype not in dtypes:
            names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
            raise TypeError(f"x must be {names}, got {x.dtype}" + (
                " (uint8 pixels go to forward_pixels)" if x.dtype == torch.uint8 else ""))
        if x.device != self.device:
            raise ValueError(f"x is on {x.device} but the engine is on {self.device}")
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"spatial size {x.shape[2]}x{x.shape[3]} is too small for {self.arch}: need at least 1x1")
        if self.device.type == "cpu" and not fake and not K.interpreting():
            raise ValueError(
                "x is a CPU tensor: fastres needs a CUDA device; on the CPU it runs only through triton's "
                "interpreter (TRITON_INTERPRET=1 set before triton is imported)"
            )

    # -- the schedule of one input shape ----------------------------------------------
    def device_info(self) -> DeviceInfo:
        """The facts of the engine's device its schedules are planned for."""
        if self._device_info is None:
            self._device_info = DeviceInfo.of(self.device)
        return self._device_info

    def schedule(self, x: "torch.Tensor | Sequence[int]") -> Schedule:
        """The launch schedule for an input like x (a tensor, or its shape [N, 3, H, W]), with
        the tile configs it would run untuned: what runs, on which buffers, with which tile and
        K split. Plain data, nothing runs; print it for a table.

        The configs are the heuristic's, except that a new input size brings no new tile:
        where the heuristic picks for a layer a tile that layer has not run at an earlier
        shape of the same batch, the layer keeps the tile it ran first (kernel sizes are not
        specialized, so the binaries compiled for it serve every size), split as the planner
        splits that tile at this shape (`Step.with_tile`): a split sized for a small input
        would cost a large one workspace and a reduce launch. The split's count is no compile
        key; splitting or not is, so a size that crosses that line compiles the tile's split
        or unsplit twin once."""
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(int(v) for v in x)
        schedule = build_schedule(self._arch, shape, self.dtype, self.device_info(), num_classes=self.num_classes,
                                  dilate=self.dilate, returns=self.returns, quantized=self.quantized)
        if self.tuner is not None:
            return schedule  # tuning measures (and so compiles) its own candidates
        keep = {}
        for i, step in enumerate(schedule.steps):
            ran = self._ran.get((shape[0], step.layer))
            if ran and tile_of(step.config) not in {tile_of(c) for c in ran}:
                keep[i] = step.with_tile(next(iter(ran)), self.device_info()).config
        return schedule.with_configs(keep) if keep else schedule

    def _tune_key(self, step: Step, batch: int) -> str:
        spec = step.spec
        # The residual is part of the layer: it changes the epilogue and the tiles allowed.
        geometry = (spec.k, spec.stride, spec.pad, spec.cin, spec.cout, *step.in_shape[2:], int(step.residual is not None))
        if (spec.dilation, spec.groups) != (1, 1):
            geometry += (spec.dilation, spec.groups)
        if spec.avg_pool:
            geometry += ("avgpool",)
        info = self.device_info()
        # The card's name, and its target: two cards of one name never share a target, but a
        # cache written by a build that mapped the card differently must not be read.
        device = info.name if info.interpreter else f"{info.name} ({info.target})"
        return cache_key(device, self._compute_dtype(step), step.space, geometry, batch)

    def _tune(self, arena: Arena, step: Step, key: str, candidates, example: torch.Tensor):
        """The measured-fastest config of one conv, on the arena's (randomly filled) buffers."""
        x = None
        with torch.inference_mode(False):
            if step.kernel == STEM:
                # Laid out as the caller's input: the stem's kernel is specialized on its strides.
                x = torch.empty_strided(example.shape, example.stride(), device=self.device, dtype=example.dtype)
                if example.dtype == torch.uint8:
                    x.copy_(torch.randint(0, 256, example.shape, device=self.device, dtype=torch.uint8))
                else:
                    x.copy_(torch.randn(example.shape, device=self.device))
            for slot, shape in ((step.src, step.in_shape), (step.residual, step.out_shape)):
                if slot is not None:
                    view = arena.view(slot, shape)
                    if view.dtype in QUANT_DTYPES:
                        view.copy_(torch.randn(view.shape, device=self.device).mul_(30).clamp_(-127, 127).round_())
                    else:
                        view.normal_()
            if any(c.bordered for c in candidates):
                arena.stage_input(step)  # bordered candidates read the same values
        return self.tuner.choose(key, lambda cfg: arena.launch(step, x, cfg), candidates, step.config,
                                 self._compute_dtype(step))

    def _precompile(self, arena: Arena, configs: Mapping[int, tuple], example: torch.Tensor, label: str) -> None:
        """Compile every kernel this shape will launch (configs[i]: every config step i may
        run, those tuning will measure included) on a thread pool before anything runs: the
        first forward at a new shape then waits for the slowest compile, not for their sum."""
        if self.device.type != "cuda" or not K.can_precompile():
            return
        try:
            with torch.inference_mode(False):
                x = torch.empty_strided(example.shape, example.stride(), device=self.device, dtype=example.dtype)
            with K.precompiling(progress=label):
                for i, step in enumerate(arena.schedule.steps):
                    for cfg in configs.get(i, (step.config,)):
                        arena.launch(step, x, cfg)
        except Exception as exc:  # noqa: BLE001 - an optimization: every kernel still compiles at its first launch
            warnings.warn(f"fastres: compiling ahead in parallel failed ({type(exc).__name__}: {exc}); kernels "
                          "compile one by one at their first launch instead", stacklevel=4)

    def _build(self, example: torch.Tensor, norm: tuple | None = None) -> Arena:
        """The schedule, buffers, configs (tuned if asked) and compiled kernels of example's
        shape, dtype and layout (its values are not read); norm: (mean, std) of uint8 pixels."""
        N, _, H, W = example.shape
        schedule = self.schedule(example)
        if norm is None:
            arena = Arena(schedule, self._params, self.device, example.dtype, ranges=self.ranges)
        else:
            with torch.inference_mode(False):
                table = K.pixel_norm(*norm, device=self.device)
            arena = Arena(schedule, self._params, self.device, torch.float32, normalize=table, ranges=self.ranges)
        # step index -> (cache key, candidates) of the convs tuning still has to measure
        tuning: dict[int, tuple[str, tuple]] = {}
        configs: dict[int, tuple] = {}
        cached: dict = {}
        if self.tuner is not None:
            for i, step in enumerate(schedule.steps):
                if step.space is None:
                    continue
                key, candidates = self._tune_key(step, N), step.candidates(self._compute_dtype(step), self.device_info())
                hit = self.tuner.cached(key, candidates)
                if hit is not None:
                    cached[i] = hit
                    configs[i] = (hit,)
                else:
                    tuning[i] = (key, candidates)
                    configs[i] = tuple(dict.fromkeys((step.config, *candidates)))
        self._precompile(arena, configs, example, f"compiling {self.arch} batch {N} {H}x{W}")
        if tuning:
            from .progress import Progress

            with Progress(len(tuning), desc=f"tuning {self.arch} batch {N} {H}x{W}", unit="conv", leave=False) as progress:
                for i, (key, candidates) in tuning.items():
                    cached[i] = self._tune(arena, schedule.steps[i], key, candidates, example)
                    progress.update()
        if cached:
            arena.reschedule(schedule.with_configs(cached))
        for step in arena.schedule.steps:
            self._ran.setdefault((N, step.layer), {})[step.config] = None
        return arena

    def _arena(self, x: torch.Tensor, norm: tuple | None = None) -> Arena:
        """The arena of x's shape: built (tuned, captured) on first use. One per shape, whatever
        the stream: a server that takes a fresh stream per request must not rebuild and
        recapture (each capture synchronizes the device); the arena orders its uses across
        streams with an event."""
        N, _, H, W = x.shape
        key = (N, H, W, x.dtype, norm)
        with self._arenas_lock:
            arena = self._arenas.get(key)
            if arena is not None:
                self._arenas.move_to_end(key)
                return arena
        # One build at a time per engine (schedule, tuning, graph capture of a new shape);
        # threads running shapes already built are not held up by it.
        with self._build_lock:
            with self._arenas_lock:
                arena = self._arenas.get(key)
            if arena is None:
                arena = self._build(x, norm)
                if self.cuda_graph:
                    with owned_stream(self.device) as stream:
                        arena.capture(x, stream)
                arena.mark_used()
                with self._arenas_lock:
                    self._arenas[key] = arena
                    # A thread still running an evicted arena keeps it alive until it is done.
                    while len(self._arenas) > self.max_shapes:
                        self._arenas.popitem(last=False)
        return arena

    def clear(self) -> None:
        """Free every input shape's buffers and CUDA graph (they are rebuilt on demand)."""
        with self._arenas_lock:
            self._arenas.clear()

    def forward(self, x: torch.Tensor):
        """Logits [N, num_classes] (a trunk: its OrderedDict of features) in x's dtype.

        Under torch.compile or torch.export the whole forward is one custom op,
        `torch.ops.fastres.forward` (fastres.ops): no graph break, the kernels and CUDA graphs
        stay fastres' own."""
        if ops.tracing():
            return ops.traced_forward(self, x)
        return self.eager_forward(x)

    def eager_forward(self, x: torch.Tensor):
        """The forward itself (what the custom op runs)."""
        self._check_input(x, dtypes=(*_INPUT_DTYPES, torch.float64))
        if x.dtype == torch.float64:
            # The stem reads at most float32: a float64 model (torchvision tests some detectors in
            # float64) gets float32 work handed back in float64.
            out = self._forward(x.float(), None, torch.float32)
            if isinstance(out, torch.Tensor):
                return out.double()
            return collections.OrderedDict((k, v.double()) for k, v in out.items())
        return self._forward(x, None, x.dtype)

    def forward_pixels(self, pixels: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
        """Logits (float32) of uint8 pixels [N, 3, H, W] (NCHW, channels_last or any strides),
        normalized as torchvision's transforms normalize them, ((x / 255) - mean) / std, but
        inside the stem's loads: the batch crosses to the GPU and is read at one byte per
        value, and no normalized copy of it is ever written. The same logits as `forward` on
        torchvision's normalized float32 batch (bitwise: the stem's GEMM operand is the same)."""
        self._check_input(pixels, dtypes=(torch.uint8,))
        norm = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        if len(norm[0]) != 3 or len(norm[1]) != 3:
            raise ValueError(f"mean and std need 3 values (one per channel), got {len(norm[0])} and {len(norm[1])}")
        if not all(math.isfinite(v) for v in norm[0] + norm[1]) or min(norm[1]) <= 0:
            raise ValueError(f"std must be positive and mean and std finite, got mean {norm[0]}, std {norm[1]}")
        return self._forward(pixels, norm, torch.float32)

    def _forward(self, x: torch.Tensor, norm: tuple | None, logits_dtype: torch.dtype):
        if x.shape[0] == 0:
            if self.returns is not None:
                outs = self.schedule((1, *x.shape[1:])).outputs
                return collections.OrderedDict(
                    (o.name, torch.empty((0, *o.shape[1:]), device=self.device, dtype=logits_dtype,
                                         memory_format=torch.channels_last)) for o in outs)
            return torch.empty((0, self.num_classes), device=self.device, dtype=logits_dtype)
        if self.device.type == "cuda":
            if self.cuda_graph and torch.cuda.is_current_stream_capturing():
                # Its own graph's capture or replay inside another capture: refused, not attempted.
                raise RuntimeError(
                    "fastres: an engine built with cuda_graph=True cannot run inside a CUDA graph capture (it captures "
                    "and replays graphs of its own): build it with cuda_graph=False to record its kernels in your graph; "
                    "under torch.compile, mode='reduce-overhead' needs torch >= 2.9 (torch.Tag.cudagraph_unsafe), "
                    "mode='default' runs fastres' own graph on any torch")
            # Triton launches on the current device: make it the engine's.
            with torch.cuda.device(self.device):
                return self._arena(x, norm).forward(x)
        with _INTERPRETER_LOCK:
            return self._arena(x, norm).forward(x)


def trunk_of(arch: "str | ArchSpec", params: Mapping[str, torch.Tensor], returns, *, dilate=NO_DILATION,
             quantized: Quantized | None = None, ranges: Mapping[str, float] | None = None, **options) -> ResNet:
    """A trunk engine returning `returns` made from a classifier's (or a deeper trunk's) folded
    `params`: its convs' tensors only. A quantized one keeps the 8-bit codes, weight scales and
    activation ranges of the convs it runs (the same values a calibration of the trunk itself
    gives: every activation it computes is the deeper network's). options: as ResNet takes."""
    returns = check_returns(returns)
    depth = returns_depth(returns)
    if quantized is not None:
        convs = {c.name for c in arch_convs(arch, dilate, depth)}
        quantized = dataclasses.replace(quantized, layers=quantized.layers & convs)
    keep = param_shapes(arch, None, depth, quantized)
    return ResNet(arch, {k: params[k] for k in keep}, returns=returns, dilate=dilate, quantized=quantized,
                  ranges=ranges, **options)
