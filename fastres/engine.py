"""The runtime: a torch.nn.Module whose forward is fastres' Triton kernels only.

Per input shape (and CUDA stream) the engine builds an arena once: activation buffers assigned
by liveness, every launch's arguments and tile config resolved, and on CUDA a captured graph.
A repeated forward at a known shape allocates nothing but its output.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import warnings
from typing import Callable, Mapping

import torch

from . import kernels as K
from .kernels._checks import out_size
from .kernels.conv import reduction
from .kernels.head import fc_config, head_workspace_numel
from .kernels.splitk import config_splits, workspace_numel
from .tuning import Tuner, cache_key
from .plan import ARCHS, ConvSpec, UnsupportedModelError, arch_blocks, check_params, param_shapes

_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ENGINE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# triton's interpreter patches triton.language while it runs a kernel: not thread-safe.
_INTERPRETER_LOCK = threading.Lock()


@dataclasses.dataclass
class _Value:
    """An activation tensor of the plan: shape [N, C, H, W], defined at step `first`."""

    shape: tuple[int, int, int, int]
    first: int
    last: int = -1
    slot: int = -1


class _Arena:
    """Buffers, launches and (on CUDA) the graph for one input shape on one stream."""

    def __init__(self):
        self.lock = threading.Lock()
        self.steps: list[Callable[[torch.Tensor], None]] = []
        self.slots: list[torch.Tensor] = []
        self.workspace: torch.Tensor | None = None  # float32: pooled features, split-K partial sums
        self.logits: torch.Tensor | None = None
        self.graph = None
        self.static_input: torch.Tensor | None = None


def _assign_slots(values: list[_Value]) -> list[int]:
    """Greedy liveness allocation: a value reuses a slot whose last reader came before it."""
    caps: list[int] = []
    busy_until: list[int] = []
    for v in sorted(values, key=lambda v: v.first):
        numel = v.shape[0] * v.shape[1] * v.shape[2] * v.shape[3]
        free = [i for i in range(len(caps)) if busy_until[i] < v.first]
        if free:
            # Prefer a slot already big enough (smallest such), else grow the biggest.
            fits = [i for i in free if caps[i] >= numel]
            i = min(fits, key=lambda i: caps[i]) if fits else max(free, key=lambda i: caps[i])
            caps[i] = max(caps[i], numel)
        else:
            caps.append(numel)
            busy_until.append(-1)
            i = len(caps) - 1
        busy_until[i] = v.last
        v.slot = i
    return caps


class ResNet(torch.nn.Module):
    """A torchvision ResNet forward computed by fastres' Triton kernels.

    Build with `fastres.from_torchvision(model)` or `fastres.load(path)`. Call with x
    [N, 3, H, W] float32/float16/bfloat16 (NCHW or channels_last) on the engine's device;
    returns logits [N, num_classes] in x's dtype. Internally activations are NHWC in
    `dtype`, BatchNorm is folded, accumulation is float32.
    """

    def __init__(
        self,
        arch: str,
        params: Mapping[str, torch.Tensor],
        *,
        num_classes: int,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cuda",
        cuda_graph: bool = True,
        tune: "bool | Tuner" = False,
        max_shapes: int = 16,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise UnsupportedModelError(f"unknown arch {arch!r}; supported: {', '.join(ARCHS)}")
        if dtype not in ENGINE_DTYPES:
            raise TypeError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
        self.arch, self.num_classes, self.dtype = arch, int(num_classes), dtype
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
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        if tune is True:
            if self.device.type != "cuda":
                raise ValueError("tune=True measures kernels on a GPU; on the CPU pass a Tuner with its own timer")
            tune = Tuner()
        self.tuner: Tuner | None = tune or None
        check_params(params, arch, num_classes, dtype)
        self._params: dict[str, torch.Tensor] = {}
        for key in param_shapes(arch, num_classes):
            t = params[key]
            fmt = torch.channels_last if t.dim() == 4 else torch.contiguous_format
            with torch.inference_mode(False):
                self._params[key] = t.to(self.device).contiguous(memory_format=fmt)
        self.stem, self.blocks = arch_blocks(arch)
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
        # Input shapes (x stream) kept built; the least recently used beyond this is freed.
        self.max_shapes = int(max_shapes)
        self._arenas: collections.OrderedDict[tuple, _Arena] = collections.OrderedDict()
        self._arenas_lock = threading.Lock()
        self._build_lock = threading.Lock()

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
        return f"arch={self.arch}, num_classes={self.num_classes}, dtype={self.dtype}, device={self.device}"

    # -- input checks -----------------------------------------------------------------
    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must be [N, 3, H, W] (rank 4), got rank {x.dim()} with shape {tuple(x.shape)}")
        if x.shape[1] != 3:
            raise ValueError(f"x must have 3 channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if x.dtype not in _INPUT_DTYPES:
            raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device} but the engine is on {self.device}")
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"spatial size {x.shape[2]}x{x.shape[3]} is too small for {self.arch}: need at least 1x1")
        if self.device.type == "cpu" and not K.interpreting():
            raise ValueError(
                "x is a CPU tensor: fastres needs a CUDA device; on the CPU it runs only through triton's "
                "interpreter (TRITON_INTERPRET=1 set before triton is imported)"
            )

    # -- the plan for one input shape --------------------------------------------------
    def _tune_key(self, op: ConvSpec, space: str, a, example: torch.Tensor) -> str:
        # The residual is part of the layer: it changes the epilogue and the tiles allowed.
        geometry = (op.k, op.stride, op.pad, op.cin, op.cout, *(example.shape[2:] if a is None else a.shape[2:]),
                    int(op.residual is not None))
        return cache_key(self._device_name(), self.dtype, space, geometry, example.shape[0])

    def _tune(self, op: ConvSpec, key: str, default, candidates, launch, a, r, example: torch.Tensor):
        """The measured-fastest config of one conv, on its own (randomly filled) buffers."""
        x = None
        with torch.inference_mode(False):
            if op is self.stem:
                # Laid out as the caller's input: the stem's kernel is specialized on its strides.
                x = torch.empty_strided(example.shape, example.stride(), device=self.device, dtype=example.dtype)
                x.copy_(torch.randn(example.shape, device=self.device))
            for t in (a, r):
                if t is not None:
                    t.normal_()
        return self.tuner.choose(key, lambda cfg: launch(x, cfg, None), candidates, default, self.dtype)

    def _precompile(self, arena: _Arena, example: torch.Tensor, label: str) -> None:
        """Compile every kernel this shape will launch (and every config tuning will measure)
        on a thread pool before anything runs: the first forward at a new shape then waits for
        the slowest compile, not for the sum of them."""
        if self.device.type != "cuda" or not K.can_precompile():
            return
        try:
            with torch.inference_mode(False):
                x = torch.empty_strided(example.shape, example.stride(), device=self.device, dtype=example.dtype)
            with K.precompiling(progress=label):
                for step in arena.steps:
                    if callable(step):
                        step(x)
                    else:
                        launch, configs = step[0], step[2]
                        for cfg in configs:
                            launch(x, cfg, None)
        except Exception as exc:  # noqa: BLE001 - an optimization: every kernel still compiles at its first launch
            warnings.warn(f"fastres: compiling ahead in parallel failed ({type(exc).__name__}: {exc}); kernels "
                          "compile one by one at their first launch instead", stacklevel=4)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "cpu-interpreter"

    def _build(self, example: torch.Tensor) -> _Arena:
        """The plan, buffers, configs (tuned if asked) and compiled kernels of example's shape,
        dtype and layout (its values are not read)."""
        N, _, H, W = example.shape
        arena = _Arena()
        values: list[_Value] = []
        launches: list[tuple] = []  # (conv spec or op name, input value, residual value, output value)

        def new(shape) -> _Value:
            v = _Value(tuple(shape), first=len(launches))
            values.append(v)
            return v

        def use(v: _Value | None):
            if v is not None:
                v.last = max(v.last, len(launches))

        def conv(spec: ConvSpec, x: _Value | None, h: int, w: int, residual: _Value | None = None):
            oh, ow = out_size(h, spec.k, spec.stride, spec.pad), out_size(w, spec.k, spec.stride, spec.pad)
            use(x)
            use(residual)
            y = new((N, spec.cout, oh, ow))
            launches.append((spec, x, residual, y))
            return y, oh, ow

        x0 = None  # the user's input, read in place by the stem
        s, h, w = conv(self.stem, x0, H, W)
        ph, pw = out_size(h, 3, 2, 1), out_size(w, 3, 2, 1)
        use(s)
        cur = new((N, 64, ph, pw))
        launches.append(("maxpool", s, None, cur))
        h, w = ph, pw
        for block in self.blocks:
            t, th, tw = cur, h, w
            for spec in block.convs[:-1]:
                t, th, tw = conv(spec, t, th, tw)
            res = cur
            if block.downsample:
                res, _, _ = conv(block.downsample, cur, h, w)
            cur, h, w = conv(block.convs[-1], t, th, tw, residual=res)
        use(cur)
        launches.append(("head", cur, None, None))

        caps = _assign_slots(values)
        with torch.inference_mode(False):
            arena.slots = [torch.empty(c, device=self.device, dtype=self.dtype) for c in caps]
            arena.logits = torch.empty((N, self.num_classes), device=self.device, dtype=example.dtype)

        def view(v: _Value | None):
            if v is None:
                return None
            n, c, hh, ww = v.shape
            return arena.slots[v.slot][: n * c * hh * ww].view(n, hh, ww, c).permute(0, 3, 1, 2)

        p = self._params
        # Until the workspace exists, the steps that use it are tuples (launch, config, configs
        # to compile ahead, tuning or None, config -> workspace elements it needs), tuning =
        # (conv spec, cache key, candidates, a, r).
        for op, src, res, dst in launches:
            a, r, y = view(src), view(res), view(dst)
            if op == "maxpool":
                cfg = K.select_config("max_pool2d", self.dtype)
                arena.steps.append(lambda x, a=a, y=y, cfg=cfg: K.max_pool2d(a, 3, 2, 1, out=y, config=cfg))
                continue
            if op == "head":
                cfg = fc_config(N, a.shape[1], self.num_classes, self.dtype, self.device)

                def launch(x, cfg, ws, a=a):
                    return K.avgpool_fc(a, p["fc.weight"], p["fc.bias"], out=arena.logits, config=cfg, workspace=ws)
                arena.steps.append((launch, cfg, (cfg,), None,
                                    lambda cfg, c=a.shape[1]: head_workspace_numel(N, c, self.num_classes, cfg)))
                continue
            # The tile config of every conv is fixed here, once per shape (the launchers' own
            # choice, made from the same geometry), so a forward does no selection work.
            w, b = p[f"{op.name}.weight"], p[f"{op.name}.bias"]
            m = dst.shape[0] * dst.shape[2] * dst.shape[3]
            flat, k, space = reduction(op.cin, op.k, op.k) if op.kernel == "conv" else (False, op.cin, op.kernel)
            taps = 1 if flat else op.k * op.k
            geometry = dict(M=m, N=op.cout, K=k, taps=taps, device=self.device, residual=op.residual is not None)
            cfg = K.select_config(space, self.dtype, **geometry)
            if op is self.stem:
                def launch(x, cfg, ws, w=w, b=b, spec=op, y=y):
                    return K.stem_conv(x, w, b, stride=spec.stride, padding=spec.pad, out=y, config=cfg, workspace=ws)
            elif op.kernel == "conv1x1":
                def launch(x, cfg, ws, w=w, b=b, spec=op, a=a, r=r, y=y):
                    return K.conv1x1(a, w, b, stride=spec.stride, relu=spec.relu, residual=r, out=y, config=cfg,
                                     workspace=ws)
            else:
                def launch(x, cfg, ws, w=w, b=b, spec=op, a=a, r=r, y=y):
                    return K.conv_bn_relu(a, w, b, stride=spec.stride, padding=spec.pad, relu=spec.relu,
                                          residual=r, out=y, config=cfg, workspace=ws)

            def ws_numel_of(cfg, m=m, cout=op.cout, k=k, taps=taps):
                return workspace_numel(m, cout, config_splits(cfg, k, taps)[0])
            tuning, configs = None, (cfg,)
            if self.tuner is not None:
                key = self._tune_key(op, space, a, example)
                candidates = K.tuning_candidates(space, self.dtype, **geometry)
                hit = self.tuner.cached(key, candidates)
                configs = (hit,) if hit is not None else tuple(dict.fromkeys((cfg, *candidates)))
                tuning = (op, key, candidates, a, r)
            arena.steps.append((launch, cfg, configs, tuning, ws_numel_of))

        self._precompile(arena, example, f"compiling {self.arch} batch {N} {H}x{W}")

        pending = [i for i, step in enumerate(arena.steps) if not callable(step)]
        progress = None
        if self.tuner is not None:
            from tqdm import tqdm

            progress = tqdm(total=sum(1 for i in pending if arena.steps[i][3] is not None),
                            desc=f"tuning {self.arch} batch {N} {H}x{W}", unit="conv", disable=None, leave=False)
        ws_numel = 0
        for i in pending:
            launch, cfg, _, tuning, ws_numel_of = arena.steps[i]
            if tuning is not None:
                op, key, candidates, a, r = tuning
                cfg = self._tune(op, key, cfg, candidates, launch, a, r, example)
                progress.update()
            ws_numel = max(ws_numel, ws_numel_of(cfg))
            arena.steps[i] = (launch, cfg)
        if progress is not None:
            progress.close()
        # One workspace serves every split conv and the head: the launches run one after
        # another on one stream.
        if ws_numel:
            with torch.inference_mode(False):
                arena.workspace = torch.empty(ws_numel, device=self.device, dtype=torch.float32)
        for i in pending:
            launch, cfg = arena.steps[i]
            arena.steps[i] = lambda x, launch=launch, cfg=cfg, ws=arena.workspace: launch(x, cfg, ws)
        return arena

    def _run(self, arena: _Arena, x: torch.Tensor) -> None:
        for step in arena.steps:
            step(x)

    def _capture(self, arena: _Arena, x: torch.Tensor) -> None:
        """Record the launches of one shape into a CUDA graph over static buffers."""
        with torch.inference_mode(False):
            # Same layout as the caller's input: the stem reads it in place, no layout pass.
            arena.static_input = torch.empty_like(x)
        arena.static_input.copy_(x)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._run(arena, arena.static_input)  # compiles every kernel before capture
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads may keep using CUDA (their own replays, allocations)
            # while this one captures.
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                self._run(arena, arena.static_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        arena.graph = graph

    def _arena(self, x: torch.Tensor) -> _Arena:
        """The arena of x's shape on the current stream: built (tuned, captured) on first use."""
        N, _, H, W = x.shape
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        key = (N, H, W, x.dtype, stream)
        with self._arenas_lock:
            arena = self._arenas.get(key)
            if arena is not None:
                self._arenas.move_to_end(key)
                return arena
        # One build at a time per engine (plan, tuning, graph capture of a new shape); threads
        # running shapes already built are not held up by it.
        with self._build_lock:
            with self._arenas_lock:
                arena = self._arenas.get(key)
            if arena is None:
                arena = self._build(x)
                if self.cuda_graph:
                    self._capture(arena, x)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        N = x.shape[0]
        if N == 0:
            return torch.empty((0, self.num_classes), device=self.device, dtype=x.dtype)
        if self.device.type == "cuda":
            # Triton launches on the current device: make it the engine's.
            with torch.cuda.device(self.device):
                return self._forward(x)
        with _INTERPRETER_LOCK:
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        arena = self._arena(x)
        with arena.lock:
            if arena.graph is not None:
                arena.static_input.copy_(x)
                arena.graph.replay()
            else:
                self._run(arena, x)
            return arena.logits.clone()
