"""The runtime half of a schedule: its buffers, its launches bound to them, its CUDA graph.

An `Arena` allocates a `Schedule`'s activation slots, logits and workspace once, binds every
step to its kernel with views of those buffers, and runs the steps in order or records them
into a CUDA graph. A repeated forward at the arena's shape allocates nothing but its output.
A bordered slot (`schedule.Border`) is zeroed when it is allocated, and only ever seen through
its interior view, so its border stays zero for every forward.
"""
from __future__ import annotations

import collections
import threading
from typing import Callable, Mapping

import torch

from . import kernels as K
from .precision import POOLED, QUANT_DTYPES, Ranges
from .schedule import CONV, CONV1X1, HEAD, MAXPOOL, STEM, Schedule, Step


class Arena:
    """Buffers, bound launches and (on CUDA, once captured) the graph of one schedule.

    params: the engine's folded parameters by state_dict key; logits_dtype: the dtype the
    caller's input has and its logits (or a trunk's returned features) get (float32 for
    pixels); normalize: for uint8 pixel inputs, the stem's `kernels.pixel_norm` table; ranges:
    a quantized schedule's activation ranges (`fastres.precision.Ranges`).
    """

    def __init__(self, schedule: Schedule, params: Mapping[str, torch.Tensor], device: torch.device,
                 logits_dtype: torch.dtype, normalize: torch.Tensor | None = None, ranges: Ranges | None = None):
        self.lock = threading.Lock()
        self.ranges = ranges
        self.schedule = schedule
        self.params = params
        self.device = device
        self.normalize = normalize
        N = schedule.input_shape[0]
        cuda = device.type == "cuda"
        # Streams that have used the buffers: the allocator must not hand them out again until
        # those streams are done with them (see `forward`); the allocating one is known to it.
        self._streams: set[int] = {torch.cuda.current_stream(device).cuda_stream} if cuda else set()
        # The last use of the buffers, on whichever stream it ran: the next use waits for it.
        self.done: torch.cuda.Event | None = None
        self.slots: list[torch.Tensor] = []
        self._allocate_slots(schedule)
        # Zero-bordered stand-ins for the input of a step run with a bordered config whose
        # slot is plain (tuning and compiling candidates ahead): by (shape, border).
        self._scratch: dict[tuple, torch.Tensor] = {}
        with torch.inference_mode(False):
            # A trunk has no logits: its outputs are views of slots no later step writes.
            self.logits = (None if schedule.num_classes is None else
                           torch.empty((N, schedule.num_classes), device=device, dtype=logits_dtype))
        self.out_dtype = logits_dtype
        self.workspace: torch.Tensor | None = None  # float32: pooled features, split-K partial sums
        with torch.inference_mode(False):
            # A fused split's arrival counters (any step's, tuning candidates' too): zero once
            # here, left zero by every fused launch, so a replayed graph finds them zero.
            self.counters = torch.zeros(K.COUNTER_WORDS, device=device, dtype=torch.int32)
        self.graph = None
        self.static_input: torch.Tensor | None = None
        self._bound: list[Callable[[torch.Tensor], torch.Tensor]] = []
        self.reschedule(schedule)

    def _allocate_slots(self, schedule: Schedule) -> None:
        """The activation buffers of `schedule`: bordered ones zeroed, once, here."""
        with torch.inference_mode(False):
            self.slots = [(torch.zeros if schedule.border(i) is not None else torch.empty)(
                c, device=self.device, dtype=schedule.slot_dtype(i)) for i, c in enumerate(schedule.slots)]

    def view(self, slot: int | None, shape: tuple[int, ...]) -> torch.Tensor | None:
        """Slot `slot` as a channels_last activation of logical shape [N, C, H, W] (of a bordered
        slot: the interior view of its bordered map)."""
        if slot is None:
            return None
        n, c, h, w = shape
        border = self.schedule.border(slot)
        if border is None:
            return self.slots[slot][: n * c * h * w].view(n, h, w, c).permute(0, 3, 1, 2)
        if tuple(border.shape) != tuple(shape):
            raise ValueError(f"slot {slot} is bordered around {border.shape}, not {tuple(shape)}")
        ph, pw = border.pad
        full = self.slots[slot][: border.numel].view(n, h + 2 * ph, w + 2 * pw, c)
        return full[:, ph:ph + h, pw:pw + w, :].permute(0, 3, 1, 2)

    def bordered_view(self, slot: int) -> torch.Tensor:
        """The whole bordered map [N, C, H+2ph, W+2pw] (border included) of bordered slot `slot`."""
        border = self.schedule.border(slot)
        if border is None:
            raise ValueError(f"slot {slot} is not bordered")
        n, c, h, w = border.shape
        ph, pw = border.pad
        return self.slots[slot][: border.numel].view(n, h + 2 * ph, w + 2 * pw, c).permute(0, 3, 1, 2)

    def scratch_input(self, step: Step) -> torch.Tensor:
        """A zero-bordered stand-in for `step`'s input (its interior view), for running the step
        with a bordered config while its input's slot is plain (tuning measures such
        candidates on it: `stage_input` copies the input in)."""
        from .kernels.conv_bordered import zero_bordered

        key = (tuple(step.in_shape), step.spec.pad)
        if key not in self._scratch:
            with torch.inference_mode(False):
                self._scratch[key] = zero_bordered(
                    torch.zeros(step.in_shape, device=self.device, dtype=self.schedule.slot_dtype(step.src)),
                    step.spec.pad)
        return self._scratch[key]

    def stage_input(self, step: Step) -> None:
        """Copy `step`'s input into its bordered stand-in (`scratch_input`), where its slot is plain."""
        if step.src is not None and self.schedule.border(step.src) is None and step.kernel == CONV \
                and step.spec.stride == 1:
            self.scratch_input(step).copy_(self.view(step.src, step.in_shape))

    def launch(self, step: Step, x: torch.Tensor, config: K.Config | None = None,
               workspace: torch.Tensor | None = None) -> torch.Tensor:
        """Run one step on the arena's buffers (x: the caller's input, read by the stem) with
        `config` (default: the step's own) and `workspace` (None: the launcher allocates one);
        returns what the step wrote."""
        return self._bind(step, step.config if config is None else config, workspace)(x)

    def reschedule(self, schedule: Schedule) -> None:
        """Take `schedule`'s configs (same input shape; e.g. after tuning): the workspace is sized
        for them, the slots allocated anew where its layout differs (configs that border other
        activations: bordered slots zeroed), and every step is bound again."""
        if schedule.input_shape != self.schedule.input_shape or schedule.dtype != self.schedule.dtype \
                or schedule.slot_dtypes != self.schedule.slot_dtypes:
            raise ValueError("reschedule: the new schedule must have the same input shape and dtype")
        if self.graph is not None:
            raise RuntimeError("reschedule: this arena's launches are already captured in a CUDA graph")
        relaid = schedule.slots != self.schedule.slots or schedule.borders != self.schedule.borders
        self.schedule = schedule
        if relaid:  # configs that border other activations: the slots are laid out anew
            self._allocate_slots(schedule)
            self._scratch.clear()
        numel = schedule.workspace
        if numel and (self.workspace is None or self.workspace.numel() < numel):
            with torch.inference_mode(False):
                self.workspace = torch.empty(numel, device=self.device, dtype=torch.float32)
        ws = self.workspace if numel else None
        self._bound = [self._bind(step, step.config, ws) for step in schedule.steps]

    def _bind(self, step: Step, cfg: K.Config, ws: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        # Views and parameters resolved once: a forward without a graph does no planning work.
        p = self.params
        cnt = self.counters
        a = self.view(step.src, step.in_shape)
        if step.kernel == MAXPOOL:
            y = self.view(step.dst, step.out_shape)
            return lambda x: K.max_pool2d(a, 3, 2, 1, out=y, config=cfg)
        q = self._quant_args(step)
        if step.kernel == HEAD:
            fw, fb, logits = p["fc.weight"], p["fc.bias"], self.logits
            return lambda x: K.avgpool_fc(a, fw, fb, out=logits, config=cfg, workspace=ws, counters=cnt, **q)
        spec = step.spec
        if step.kernel == CONV and cfg.bordered and self.schedule.border(step.src) is None:
            a = self.scratch_input(step)  # a candidate run off the schedule's layout
        w, b = p[f"{spec.name}.weight"], p[f"{spec.name}.bias"]
        y, r = self.view(step.dst, step.out_shape), self.view(step.residual, step.out_shape)
        if step.kernel == STEM:
            norm = self.normalize
            return lambda x: K.stem_conv(x, w, b, stride=spec.stride, padding=spec.pad, out=y, config=cfg, workspace=ws,
                                         normalize=norm, counters=cnt, **q)
        if step.kernel == CONV1X1:
            return lambda x: K.conv1x1(a, w, b, stride=spec.stride, pool=spec.avg_pool, relu=spec.relu, residual=r,
                                       out=y, config=cfg, workspace=ws, counters=cnt, **q)
        if step.kernel == CONV:
            return lambda x: K.conv_bn_relu(a, w, b, stride=spec.stride, padding=spec.pad, dilation=spec.dilation,
                                            groups=spec.groups, relu=spec.relu, residual=r, out=y, config=cfg,
                                            workspace=ws, counters=cnt, **q)
        raise ValueError(f"unknown kernel {step.kernel!r} in step {step.layer}")

    def _quant_args(self, step: Step) -> dict:
        """The quantization keywords of a launch of a quantized schedule: the accumulator's
        multipliers of an 8-bit conv, the inverse scale of an input it quantizes as it loads it
        and of an 8-bit output, the scale of an 8-bit residual or of the head's 8-bit input; an
        8-bit classifier's multipliers and its pooled features' inverse scale."""
        pr, rg = step.precision, self.ranges
        if pr is None or step.kernel == MAXPOOL:
            return {}
        if rg is None:
            raise ValueError(f"{step.layer}: a quantized schedule needs its activation ranges")
        if step.kernel == HEAD:
            q = dict(x_scale=rg.scale(pr.src_scale)) if pr.src in QUANT_DTYPES else {}
            if pr.eight_bit:  # the classifier: the pooled features quantized as its GEMM loads them
                scale = rg.dequant(POOLED, self.params["fc.weight_scale"]).to(self.device)
                q.update(scale=scale, in_inv=rg.inv(POOLED))
            return q
        q = {}
        if pr.eight_bit:
            q["scale"] = rg.dequant(pr.src_scale, self.params[f"{step.spec.name}.weight_scale"]).to(self.device)
            if pr.src not in QUANT_DTYPES:  # the caller's image or a float activation: quantized as loaded
                q["in_inv"] = rg.inv(pr.src_scale)
        if pr.dst in QUANT_DTYPES:
            q["out_inv"] = rg.inv(pr.dst_scale)
        if pr.residual in QUANT_DTYPES:
            q["residual_scale"] = rg.scale(pr.residual_scale)
        return q

    def run(self, x: torch.Tensor) -> None:
        """Every step in order on the current stream; the logits land in `self.logits`, a
        trunk's outputs in their slots (`outputs`)."""
        for fn in self._bound:
            fn(x)

    def capture(self, x: torch.Tensor, stream: torch.cuda.Stream) -> None:
        """Record the steps into a CUDA graph over a static copy of x (its layout kept: the
        stem reads it in place), on `stream`, which no one else may use meanwhile; `forward`
        then replays it for new inputs."""
        with torch.inference_mode(False):
            self.static_input = torch.empty_like(x)
        self.static_input.copy_(x)
        # Not a pooled torch.cuda.Stream(): a caller's work on the same stream would be
        # captured into this graph (fastres.streams).
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self.run(self.static_input)  # compiles every kernel before capture
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads may keep using CUDA (their own replays, allocations)
            # while this one captures.
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                self.run(self.static_input)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = graph

    def tensors(self) -> list[torch.Tensor]:
        """Every buffer the steps read or write."""
        return [t for t in (*self.slots, self.logits, self.workspace, self.counters, self.static_input, self.normalize)
                if t is not None]

    def mark_used(self) -> None:
        """Record that the current stream's work so far is the buffers' last use."""
        if self.device.type == "cuda":
            if self.done is None:
                self.done = torch.cuda.Event()
            self.done.record(torch.cuda.current_stream(self.device))

    def outputs(self) -> "collections.OrderedDict[str, torch.Tensor]":
        """A trunk's returned activations, by the caller's names in execution order: views of
        the arena's slots (channels_last, engine dtype), valid until the next forward."""
        return collections.OrderedDict((o.name, self.view(o.slot, o.shape)) for o in self.schedule.outputs)

    def forward(self, x: torch.Tensor):
        """The logits of x, or a trunk's OrderedDict of features in `out_dtype` (copies: the
        arena's buffers are reused by the next forward), computed on the current stream,
        whichever it is: one arena serves every stream of a shape."""
        with self.lock:
            if self.device.type == "cuda":
                stream = torch.cuda.current_stream(self.device)
                # The previous forward may have run on another stream: its reads of the input
                # copy and writes of the logits must be done before this one overwrites them.
                if self.done is not None:
                    stream.wait_event(self.done)
                if stream.cuda_stream not in self._streams:
                    # Freed buffers are reused only once this stream's work on them is done.
                    for t in self.tensors():
                        t.record_stream(stream)
                    self._streams.add(stream.cuda_stream)
            if self.graph is not None:
                self.static_input.copy_(x)
                self.graph.replay()
            else:
                self.run(x)
            if self.logits is not None:
                out = self.logits.clone()
            else:
                out = collections.OrderedDict((name, t.to(self.out_dtype, copy=True)) for name, t in self.outputs().items())
            self.mark_used()
            return out
