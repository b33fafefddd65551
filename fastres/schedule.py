"""The launch schedule: which kernel runs when, on which buffers, with which tile config.

`build_schedule(arch, input_shape, dtype, device)` turns an architecture and an input shape
into plain data: one `Step` per launch (the stem conv, the max pool, every conv of every block
with its fused residual, the head), the activation buffers ("slots") they read and write,
assigned by liveness (a trunk's returned activations, `Schedule.outputs`, stay alive to the end), each conv's tile config with its K split, and the float32 workspace the
split launches and the head need. An activation read by a bordered conv (a ``tma_b``,
``tma_b_ws`` or ``tma_b_p`` config, kernels/conv_bordered.py) lives in a bordered slot: inside
a zero border as wide as that conv's padding (`Border`), which the arena zeroes once; its
producers write the interior, and every consumer reads the interior view. Bordered slots are
shared only by activations of one shape and border, so no write ever lands on a border. The
layout follows the configs: `Schedule.with_configs` lays the slots out again. Nothing is
allocated and no kernel runs, so a schedule can be printed (`fastres run --plan`,
`ResNet.schedule(x)`) and tested on any machine, for any device described by a `DeviceInfo`.
The runtime (`fastres.arena`) binds a schedule to buffers and runs or captures it.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import torch

from .device import DeviceInfo
from .kernels._checks import out_size
from .kernels.config import (Config, bordered_rows, choose_split, m_tiles, select_config, tile_of, tuning_candidates,
                              with_split)
from .kernels.reduction import conv_problem
from .kernels.head import head_workspace_numel
from .kernels.splitk import conv_split
from .plan import (LAYERS, NO_DILATION, ArchSpec, ConvSpec, arch_blocks, arch_label, arch_spec, check_dilate,
                   check_returns, returns_depth)
from .precision import Precision, Quantized, plan_precision, short

Shape = tuple[int, int, int, int]

# The launcher each step calls (fastres.kernels).
STEM, CONV, CONV1X1, MAXPOOL, HEAD = "stem_conv", "conv_bn_relu", "conv1x1", "max_pool2d", "avgpool_fc"


@dataclasses.dataclass(frozen=True)
class Step:
    """One launch (two or three where its K loop is split, the reduce included).

    src / dst / residual: slot indices of the input, output and fused residual activations
    (src None: the caller's input, read in place; dst None: the logits). Shapes are logical
    NCHW; every activation is stored NHWC. gemm: (M, N, K, taps) of the implicit GEMM the
    config is chosen for; space: the config space tuning may choose from (None: not tuned).
    """

    kernel: str
    layer: str
    src: int | None
    dst: int | None
    residual: int | None
    in_shape: Shape
    out_shape: tuple[int, ...]
    config: Config
    space: str | None = None
    spec: ConvSpec | None = None
    gemm: tuple[int, int, int, int] | None = None
    splits: int = 1
    workspace: int = 0  # float32 elements
    # A quantized schedule's dtypes of this launch (None: everything in the schedule's dtype).
    precision: Precision | None = None

    def with_config(self, config: Config) -> "Step":
        """The same launch with another tile config (its split and workspace follow)."""
        return dataclasses.replace(self, config=config, **_split_fields(self.kernel, self.gemm, self.spec,
                                                                          self.in_shape, self.out_shape, config))

    def candidates(self, dtype: torch.dtype, device: DeviceInfo) -> tuple[Config, ...]:
        """The configs per-layer tuning measures for this step (none for untuned steps)."""
        if self.space is None:
            return ()
        m, n, k, taps = self.gemm
        stride = self.spec.stride if self.spec is not None else 1
        dilation = self.spec.dilation if self.spec is not None else 1
        segments, bordered = self._grid_rows()
        cands = tuning_candidates(self.space, dtype, M=m, N=n, K=k, taps=taps, residual=self.residual is not None,
                                  stride=stride, dilation=dilation, segments=segments, bordered=bordered,
                                  **_planned_for(device))
        p = self.precision
        if p is not None and p.eight_bit and p.src != p.compute:
            # A bordered conv reads its input in its weights' dtype, never a float one to quantize
            # (kernels/conv_bordered.py).
            cands = tuple(c for c in cands if not c.bordered)
        return cands

    def with_tile(self, config: Config, device: DeviceInfo) -> "Step":
        """This launch with `config`'s tile and the K split the planner gives that tile at this
        step's shape on `device` (`choose_split` over the grid the tile launches; never on the
        interpreter, whose planner does not split): how a layer keeps a tile compiled at
        another input size without keeping a split planned for that size."""
        if self.gemm is None:
            return self.with_config(config)
        geometry = _conv_geometry(self.kernel, self.gemm, self.spec, self.in_shape, self.out_shape)
        tile = tile_of(config)
        split = 1
        if not device.interpreter:
            segments, bordered = self._grid_rows()
            programs = m_tiles(tile, self.gemm[0], segments, bordered) * -(-self.gemm[1] // tile.BLOCK_N)
            split = choose_split(programs, conv_split(tile, **geometry).iters, device.sms)
        return self.with_config(with_split(self.space or "conv1x1", config, split, residual=self.residual is not None))

    def _grid_rows(self) -> tuple[tuple[int, int] | None, int | None]:
        """(segments, bordered): what the grids of the ``tma`` and bordered convs are made of
        (`m_tiles`), for a conv step; (None, None) otherwise."""
        if self.kernel != CONV:
            return None, None
        segments = (self.out_shape[0] * self.out_shape[2], self.out_shape[3])  # one tile row per output row segment
        bordered = None
        if self.spec.stride == 1 and self.spec.groups == 1:  # the bordered convs' grid: rows of the bordered map
            n_, _, h, w = self.in_shape
            bordered = bordered_rows(n_, h + 2 * self.spec.pad, w + 2 * self.spec.pad, *self.out_shape[2:])
        return segments, bordered

    @property
    def bordered_input(self) -> bool:
        """Whether this step reads its input as the interior of a zero-bordered slot."""
        return self.kernel == CONV and self.config.bordered


def _planned_for(device: DeviceInfo) -> dict:
    return dict(sms=device.sms, target=device.target, max_shared=device.max_shared)


def _conv_geometry(kernel: str, gemm, spec: ConvSpec | None, in_shape: Shape, out_shape) -> dict | None:
    """`conv_split`'s geometry arguments for a launch (None: it has no K loop); the head's
    classifier is a 1x1 GEMM over the pooled features."""
    if kernel == HEAD:
        return dict(M=in_shape[0], C=in_shape[1], CO=out_shape[1])
    if gemm is None:
        return None
    return dict(M=gemm[0], C=spec.cin, CO=spec.cout, KH=spec.k, KW=spec.k, groups=spec.groups)


def _split_fields(kernel: str, gemm, spec: ConvSpec | None, in_shape: Shape, out_shape, config: Config) -> dict:
    """A launch's split and workspace as its launcher runs them (`conv_split`: a grouped conv's
    tile loops over every group it spans, more than the Cin/groups its config is chosen for)."""
    geometry = _conv_geometry(kernel, gemm, spec, in_shape, out_shape)
    if geometry is None:
        return dict(splits=1, workspace=0)
    plan = conv_split(config, **geometry)
    if kernel == HEAD:  # the pooled features first, then the partials
        return dict(splits=plan.splits, workspace=head_workspace_numel(in_shape[0], in_shape[1], out_shape[1], config))
    return dict(splits=plan.splits, workspace=plan.workspace)


@dataclasses.dataclass(frozen=True)
class Border:
    """A bordered slot: activations of logical shape [N, C, H, W] stored inside a zero border
    `pad` = (rows, columns) wide, as one dense NHWC map [N, H+2ph, W+2pw, C]."""

    shape: Shape
    pad: tuple[int, int]

    @property
    def numel(self) -> int:
        n, c, h, w = self.shape
        return n * c * (h + 2 * self.pad[0]) * (w + 2 * self.pad[1])

    @property
    def extra(self) -> int:
        """Elements of the border alone."""
        n, c, h, w = self.shape
        return self.numel - n * c * h * w


@dataclasses.dataclass(frozen=True)
class Output:
    """A returned activation of a trunk: `name` (the caller's), held in `slot` with logical
    shape [N, C, H, W] (NHWC in memory), written by step `step` and by no step after it."""

    name: str
    slot: int
    shape: Shape
    step: int


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Every launch of one forward at one input shape, in order, and the buffers they share.

    slots: the element capacity of each activation buffer (in the engine dtype); workspace:
    float32 elements of the one scratch buffer every split conv and the head share (the
    launches run one after another on one stream). A trunk (num_classes None) has no head:
    outputs lists what it returns, in execution order; no later step writes those slots.
    """

    arch: str
    input_shape: Shape
    dtype: torch.dtype
    num_classes: int | None
    device: DeviceInfo
    slots: tuple[int, ...]
    steps: tuple[Step, ...]
    outputs: tuple[Output, ...] = ()
    dilate: tuple[bool, bool, bool] = NO_DILATION
    # Per slot: its Border, or None for a plain slot (empty: none bordered).
    borders: tuple[Border | None, ...] = ()
    # Per slot: the dtype of its elements (empty: every slot in `dtype`; a quantized schedule
    # keeps 8-bit and float activations in slots of their own).
    slot_dtypes: tuple[torch.dtype, ...] = ()
    # The activations (shape, first writer, last reader) and each step's (src, dst, residual)
    # activation indices: what `with_configs` lays the slots out again from.
    values: tuple[tuple[Shape, int, int, torch.dtype | None], ...] = dataclasses.field(default=(), compare=False, repr=False)
    wiring: tuple[tuple[int | None, int | None, int | None], ...] = dataclasses.field(default=(), compare=False,
                                                                                       repr=False)

    @property
    def workspace(self) -> int:
        return max((s.workspace for s in self.steps), default=0)

    def slot_dtype(self, slot: int) -> torch.dtype:
        """The dtype of slot `slot`'s elements."""
        return self.slot_dtypes[slot] if self.slot_dtypes else self.dtype

    @property
    def quantized(self) -> bool:
        return any(s.precision is not None and s.precision.eight_bit for s in self.steps)

    def border(self, slot: int | None) -> Border | None:
        """Slot `slot`'s Border (None: a plain slot)."""
        return self.borders[slot] if slot is not None and self.borders else None

    def with_configs(self, configs: Mapping[int, Config]) -> "Schedule":
        """The same schedule with the tile configs of some steps (by index) replaced; its slots
        laid out again where that changes which activations are bordered."""
        steps = tuple(s.with_config(configs[i]) if i in configs else s for i, s in enumerate(self.steps))
        if not self.values:
            return dataclasses.replace(self, steps=steps)
        values = [_Value(*v) for v in self.values]
        caps, borders, dtypes = lay_out(values, self.wiring, steps)
        slot = {None: None, **{i: v.slot for i, v in enumerate(values)}}
        steps = tuple(dataclasses.replace(st, src=slot[src], dst=slot[dst], residual=slot[res])
                      for st, (src, dst, res) in zip(steps, self.wiring))
        outputs = tuple(dataclasses.replace(o, slot=slot[self.wiring[o.step][1]]) for o in self.outputs)
        return dataclasses.replace(self, steps=steps, slots=caps, borders=borders, outputs=outputs, slot_dtypes=dtypes)

    def __str__(self) -> str:
        return format_schedule(self)


@dataclasses.dataclass
class _Value:
    """An activation of the forward: shape [N, C, H, W], written at step `first`, last read at `last`."""

    shape: Shape
    first: int
    last: int = -1
    dtype: torch.dtype | None = None  # its storage (None: the schedule's dtype)
    slot: int = -1
    border: Border | None = None


def assign_slots(values: Sequence[_Value]) -> tuple[list[int], list[tuple[Border | None, torch.dtype | None]]]:
    """Greedy liveness allocation: a value reuses a slot whose last reader came before it and
    whose kind is its own (plain, or bordered with the same shape and border; of the same
    dtype). Sets each value's slot; returns the slots' capacities in elements and their kinds
    (border, dtype)."""
    caps: list[int] = []
    busy_until: list[int] = []
    kinds: list[Border | None] = []
    for v in sorted(values, key=lambda v: v.first):
        numel = v.border.numel if v.border is not None else v.shape[0] * v.shape[1] * v.shape[2] * v.shape[3]
        free = [i for i in range(len(caps)) if busy_until[i] < v.first and kinds[i] == (v.border, v.dtype)]
        if free:
            # Prefer a slot already big enough (smallest such), else grow the biggest.
            fits = [i for i in free if caps[i] >= numel]
            i = min(fits, key=lambda i: caps[i]) if fits else max(free, key=lambda i: caps[i])
            caps[i] = max(caps[i], numel)
        else:
            caps.append(numel)
            busy_until.append(-1)
            kinds.append((v.border, v.dtype))
            i = len(caps) - 1
        busy_until[i] = v.last
        v.slot = i
    return caps, kinds


# Consumers that read only dense (unbordered) activations: the TMA 1x1 GEMM reads pixels as one
# [M, Cin] matrix; the max pool and the head read the stem's and the last stage's outputs,
# which no conv reads bordered.
def _needs_dense(step: Step) -> bool:
    return step.kernel in (MAXPOOL, HEAD) or (step.kernel == CONV1X1 and step.config.tma)


def lay_out(values: Sequence[_Value], wiring, steps: Sequence[Step]) -> tuple[tuple[int, ...], tuple[Border | None, ...],
                                                                              tuple[torch.dtype, ...]]:
    """Borders, then slots: an activation is bordered where a step reads it with a bordered
    config (border = that conv's padding). Raises ValueError where another reader of it cannot
    read an interior view, or two bordered readers want different borders."""
    for (src, _, _), step in zip(wiring, steps):
        if src is not None and step.bordered_input:
            v = values[src]
            b = Border(v.shape, (step.spec.pad, step.spec.pad))
            if v.border not in (None, b):
                raise ValueError(f"{step.layer}: its input is read bordered by {v.border.pad} and {b.pad}")
            v.border = b
    for (src, _, _), step in zip(wiring, steps):
        if src is not None and values[src].border is not None and _needs_dense(step):
            raise ValueError(f"{step.layer} ({step.kernel}, config {step.config.name}) reads a dense input, but a "
                             "bordered conv reads the same activation: give one of them another config")
    caps, kinds = assign_slots(values)
    borders = [b for b, _ in kinds]
    dtypes = () if all(d is None for _, d in kinds) else tuple(d for _, d in kinds)
    return tuple(caps), (tuple(borders) if any(b is not None for b in borders) else ()), dtypes


def build_schedule(
    arch: "str | ArchSpec", input_shape: Sequence[int], dtype: torch.dtype, device: DeviceInfo, *, num_classes: int | None = 1000,
    dilate=NO_DILATION, returns=None, quantized: Quantized | None = None,
) -> Schedule:
    """The launch schedule of `arch` for an input of `input_shape` [N, 3, H, W] with activations
    in `dtype`, its tile configs chosen for `device` (a thread's `use_config` overrides apply).

    dilate: torchvision's replace_stride_with_dilation. returns: a trunk's outputs (a mapping
    layer -> name, as IntermediateLayerGetter's return_layers); the schedule then stops after
    the last returned layer, has no head, and num_classes is ignored. quantized: the convs
    that compute in 8 bits (`fastres.precision`); the others, and float activations, in `dtype`.
    """
    spec = arch_spec(arch)
    if len(input_shape) != 4 or input_shape[1] != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be [N, 3, H, W] with every size >= 1, got {tuple(input_shape)}")
    N, _, H, W = (int(v) for v in input_shape)
    dilate, returns = check_dilate(dilate), check_returns(returns)
    if returns is not None:
        num_classes = None
    stem, blocks = arch_blocks(arch, dilate, returns_depth(returns))
    returned = dict(returns or ())
    outputs: list[tuple[str, _Value]] = []
    values: list[_Value] = []
    # (kernel, layer, conv spec, input value, residual value, output value, output shape)
    launches: list[tuple] = []

    def new(shape) -> _Value:
        v = _Value(tuple(shape), first=len(launches))
        values.append(v)
        return v

    def use(*vs: _Value | None) -> None:
        for v in vs:
            if v is not None:
                v.last = max(v.last, len(launches))

    def conv(kernel: str, spec: ConvSpec, x: _Value | None, in_shape: Shape, residual: _Value | None = None):
        oh, ow = (out_size(s, spec.k, spec.stride, spec.pad, spec.dilation) for s in in_shape[2:])
        use(x, residual)
        y = new((N, spec.cout, oh, ow))
        launches.append((kernel, spec.name, spec, x, residual, y, in_shape))
        return y

    s = conv(STEM, stem[0], None, (N, 3, H, W))
    for extra in stem[1:]:  # a deep stem's further 3x3 convs
        s = conv(CONV, extra, s, s.shape)
    if "stem" in returned:
        outputs.append((returned["stem"], s))
    use(s)
    cur = new((N, spec.inplanes, out_size(s.shape[2], 3, 2, 1), out_size(s.shape[3], 3, 2, 1)))
    launches.append((MAXPOOL, "maxpool", None, s, None, cur, s.shape))
    if "maxpool" in returned:
        outputs.append((returned["maxpool"], cur))
    for bi, block in enumerate(blocks):
        t = cur
        for spec in block.convs[:-1]:
            t = conv(CONV1X1 if spec.kernel == "conv1x1" else CONV, spec, t, t.shape)
        res = cur
        if block.downsample:
            res = conv(CONV1X1, block.downsample, cur, cur.shape)
        last = block.convs[-1]
        cur = conv(CONV1X1 if last.kernel == "conv1x1" else CONV, last, t, t.shape, residual=res)
        layer = block.name.split(".")[0]
        if layer in returned and (bi + 1 == len(blocks) or not blocks[bi + 1].name.startswith(layer + ".")):
            outputs.append((returned[layer], cur))
    if returns is None:
        use(cur)
        launches.append((HEAD, "fc", None, cur, None, None, cur.shape))
    else:
        # Returned activations are read after the last launch: no later step may reuse their slots.
        for _, v in outputs:
            v.last = len(launches)
    index = {id(v): i for i, v in enumerate(values)}

    def vi(v: _Value | None) -> int | None:
        return None if v is None else index[id(v)]

    wiring = tuple((vi(src), vi(dst), vi(res)) for _, _, _, src, res, dst, _ in launches)
    value_dtypes, _, precisions = plan_precision([(k, layer) for k, layer, *_ in launches], wiring,
                                                 {vi(v) for _, v in outputs}, len(values), dtype, quantized)
    if quantized is not None:
        for v, d in zip(values, value_dtypes):
            v.dtype = d

    steps = []
    for (kernel, layer, spec, src, res, dst, in_shape), precision in zip(launches, precisions):
        out_shape = dst.shape if dst is not None else (N, num_classes)
        compute = dtype if precision is None or kernel == MAXPOOL else precision.compute
        # (slots are laid out below, from the configs)
        slots = dict(src=vi(src), dst=vi(dst), residual=vi(res))
        if kernel == MAXPOOL:
            cfg = select_config("max_pool2d", dtype, interpreter=device.interpreter, **_planned_for(device))
            steps.append(Step(kernel, layer, **slots, in_shape=in_shape, out_shape=out_shape, config=cfg,
                              precision=precision))
            continue
        if kernel == HEAD:
            # The classifier is the 1x1 GEMM over the pooled float32 features.
            gemm = (N, num_classes, in_shape[1], 1)
            space = None
        elif kernel == CONV1X1:
            gemm, space = (N * out_shape[2] * out_shape[3], spec.cout, spec.cin, 1), "conv1x1"
        else:
            space, n, k, taps = conv_problem(spec.cin, spec.cout, spec.k, spec.k, spec.groups)
            gemm = (N * out_shape[2] * out_shape[3], n, k, taps)
        m, n, k, taps = gemm
        cfg = select_config(space or "conv1x1", compute, M=m, N=n, K=k, taps=taps, residual=res is not None,
                            interpreter=device.interpreter, **_planned_for(device))
        steps.append(Step(kernel, layer, **slots, in_shape=in_shape, out_shape=out_shape, config=cfg, space=space,
                          spec=spec, gemm=gemm, precision=precision,
                          **_split_fields(kernel, gemm, spec, in_shape, out_shape, cfg)))
    caps, borders, slot_dtypes = lay_out(values, wiring, steps)
    steps = [dataclasses.replace(st, src=None if a is None else values[a].slot, dst=None if d is None else values[d].slot,
                                 residual=None if r is None else values[r].slot)
             for st, (a, d, r) in zip(steps, wiring)]
    outs = tuple(Output(name, v.slot, v.shape, v.first) for name, v in outputs)
    return Schedule(arch_label(arch), (N, 3, H, W), dtype, None if num_classes is None else int(num_classes), device, caps,
                    tuple(steps), outs, dilate, borders, slot_dtypes,
                    tuple((v.shape, v.first, v.last, v.dtype) for v in values), wiring)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape[1:])


def format_schedule(schedule: Schedule) -> str:
    """A table of the schedule: one line per launch, then the buffers it needs."""
    dtype = str(schedule.dtype).removeprefix("torch.")
    quantized = schedule.quantized
    if quantized:
        eight = next(s.precision.compute for s in schedule.steps if s.precision is not None and s.precision.eight_bit)
        dtype = f"{short(eight)} and {dtype}"
    # A quantized schedule names each launch's dtypes: compute (input -> output).
    prec = ((lambda s: "" if s.precision is None else
             f" {short(s.precision.compute)}({short(s.precision.src)}->{short(s.precision.dst)})")
            if quantized else (lambda s: ""))
    dilated = [LAYERS[i + 1] for i, d in enumerate(schedule.dilate) if d]
    what = (f"{schedule.num_classes} classes" if schedule.num_classes is not None else
            "trunk returning " + ", ".join(f"{o.name} (s{o.slot} {_fmt_shape(o.shape)})" for o in schedule.outputs))
    lines = [
        f"{schedule.arch}{' (dilated ' + ', '.join(dilated) + ')' if dilated else ''} schedule: input "
        f"{'x'.join(map(str, schedule.input_shape))}, {dtype} activations, {what}, for {schedule.device}",
        f"{'#':>3}  {'kernel':<12} {'layer':<22} {'input':<16} {'output':<16} {'residual':<9} {'config':<22} split"
        + ("  dtypes" if quantized else ""),
    ]
    for i, s in enumerate(schedule.steps):
        src = "x" if s.src is None else f"s{s.src}"
        dst = "logits" if s.dst is None else f"s{s.dst}"
        dst += "".join(f"={o.name}" for o in schedule.outputs if o.step == i)
        res = "" if s.residual is None else f"s{s.residual}"
        lines.append(f"{i:>3}  {s.kernel:<12} {s.layer:<22} {src + ' ' + _fmt_shape(s.in_shape):<16} "
                     f"{dst + ' ' + _fmt_shape(s.out_shape):<16} {res:<9} {s.config.name:<22} "
                     f"{s.splits if s.splits > 1 else '-':<5}{prec(s)}".rstrip())
    def elem(i: int) -> int:
        return torch.empty((), dtype=schedule.slot_dtype(i)).element_size()

    for i, cap in enumerate(schedule.slots):
        b = schedule.border(i)
        what = "" if b is None else (f"  bordered {b.pad[0]}x{b.pad[1]} around {_fmt_shape(b.shape)}: "
                                     f"+{b.extra * elem(i) / 2**20:.2f} MiB of border")
        kind = f" {short(schedule.slot_dtype(i))}" if quantized else ""
        lines.append(f"     s{i:<3} {cap * elem(i) / 2**20:9.2f} MiB{kind}{what}")
    total = sum(cap * elem(i) for i, cap in enumerate(schedule.slots))
    border = sum(b.extra * elem(i) for i, b in enumerate(schedule.borders) if b is not None)
    fused = sum(1 for s in schedule.steps if s.residual is not None)
    split = sum(1 for s in schedule.steps if s.splits > 1)
    lines.append(f"{len(schedule.steps)} launches ({fused} with a fused residual, {split} with a split K loop); "
                 f"{len(schedule.slots)} activation buffers, {total / 2**20:.2f} MiB"
                 + (f" ({sum(b is not None for b in schedule.borders)} bordered, {border / 2**20:.2f} MiB of border)"
                    if border else "") + "; "
                 f"float32 workspace {schedule.workspace * 4 / 2**20:.2f} MiB")
    return "\n".join(lines)
