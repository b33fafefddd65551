"""The runtime: Triton kernels only, the arena, thread safety, input checks, NaN propagation."""
from __future__ import annotations

import threading

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastres
from fastres.kernels.config import tile_of
from helpers import DEVICE, ON_GPU, assert_close
from test_build import calibrated, reference

# aten ops a Triton-only forward must never run.
FORBIDDEN = (
    "conv", "batch_norm", "relu", "threshold", "add", "sub", "mul", "pool", "mean", "sum", "linear", "addmm",
    "mm", "matmul", "bmm", "clamp", "maximum",
)


_ALLOC_OPS = ("empty", "empty_strided", "new_empty", "new_empty_strided", "clone", "zeros", "ones", "full", "_to_copy")


class OpSpy(TorchDispatchMode):
    """Records every aten op; for allocations, also whether fastres itself asked for them
    (triton's CPU interpreter copies kernel arguments through its own temporaries)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.own_allocs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops.append(name)
        if name in _ALLOC_OPS:
            import traceback

            files = [f.filename.replace("\\", "/") for f in traceback.extract_stack()]
            if not any("triton/runtime/interpreter" in f for f in files):
                self.own_allocs.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def engine():
    return fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float32, device=DEVICE)


def test_forward_is_triton_only(engine):
    x = torch.randn(1, 3, 19, 23, device=DEVICE)
    engine(x)  # build the arena (and graph) first
    with OpSpy() as spy:
        engine(x)
    bad = sorted({op for op in spy.ops if any(f in op for f in FORBIDDEN)})
    assert not bad, f"aten ops in the forward: {bad} (all ops: {sorted(set(spy.ops))})"


def test_bottleneck_forward_is_triton_only():
    fast = fastres.from_torchvision(calibrated("resnet50"), dtype=torch.float16, device=DEVICE)
    x = torch.randn(1, 3, 17, 15, device=DEVICE, dtype=torch.float16)
    with OpSpy() as spy:
        fast(x)
    bad = sorted({op for op in spy.ops if any(f in op for f in FORBIDDEN)})
    assert not bad, f"aten ops in the forward: {bad}"


def test_arena_second_forward_allocates_only_output(engine):
    x = torch.randn(2, 3, 21, 18, device=DEVICE)
    first = engine(x)
    if ON_GPU:
        torch.cuda.synchronize()
        before = torch.cuda.memory_stats()["allocation.all.allocated"]
        second = engine(x)
        torch.cuda.synchronize()
        assert torch.cuda.memory_stats()["allocation.all.allocated"] - before == 1
    else:
        arena_slots = [id(s) for a in engine._arenas.values() for s in a.slots]
        with OpSpy() as spy:
            second = engine(x)
        assert spy.own_allocs == ["clone"], f"allocations in a repeated forward: {spy.own_allocs}"
        # The spy does see allocations (the interpreter's own), so it cannot pass vacuously.
        assert any(op in _ALLOC_OPS for op in spy.ops)
        assert arena_slots == [id(s) for a in engine._arenas.values() for s in a.slots]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert second.data_ptr() != first.data_ptr()


def test_arena_reuses_buffers_by_liveness(engine):
    x = torch.randn(1, 3, 32, 32, device=DEVICE)
    engine(x)
    arena = next(a for k, a in engine._arenas.items() if k[:3] == (1, 32, 32))
    # resnet18 has 20 conv/pool outputs; liveness needs only a handful of buffers.
    assert len(arena.slots) <= 5, [s.numel() for s in arena.slots]


def test_threads_at_different_batch_sizes():
    fast = fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float32, device=DEVICE)
    inputs = {n: torch.randn(n, 3, 16, 16, device=DEVICE) for n in (1, 3)}
    expected = {n: fast(x) for n, x in inputs.items()}
    errors: list[BaseException] = []

    def work(n):
        try:
            torch.testing.assert_close(fast(inputs[n]), expected[n], rtol=0, atol=0)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 3, 1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_inference_mode_and_no_grad(engine):
    x = torch.randn(1, 3, 16, 20, device=DEVICE)
    plain = engine(x)
    with torch.inference_mode():
        a = engine(x)
    with torch.no_grad():
        b = engine(x)
    torch.testing.assert_close(a, plain, rtol=0, atol=0)
    torch.testing.assert_close(b, plain, rtol=0, atol=0)


def test_empty_batch(engine):
    y = engine(torch.randn(0, 3, 16, 16, device=DEVICE))
    assert tuple(y.shape) == (0, 10) and y.dtype == torch.float32


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: torch.randn(1, 4, 16, 16), ValueError, ["3 channels", "4"]),
        (lambda: torch.randn(3, 16, 16), ValueError, ["rank 4", "rank 3"]),
        (lambda: torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8), TypeError, ["torch.uint8", "forward_pixels"]),
        (lambda: torch.randn(1, 3, 16, 16, device="meta"), ValueError, ["meta", "engine"]),
        (lambda: torch.randn(1, 3, 0, 16), ValueError, ["too small", "0x16"]),
        (lambda: [[1.0]], TypeError, ["torch.Tensor"]),
    ],
    ids=["channels", "rank", "integer", "device", "spatial", "not-a-tensor"],
)
def test_bad_input(engine, make, exc, words):
    x = make()
    if isinstance(x, torch.Tensor) and x.device.type == "cpu":
        x = x.to(DEVICE)
    with pytest.raises(exc) as info:
        engine(x)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_cpu_without_interpreter_says_so(engine, monkeypatch):
    if ON_GPU:
        pytest.skip("the engine is on CUDA here")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="x is a CPU tensor.*CUDA device"):
        engine(torch.randn(1, 3, 16, 16))


def test_nan_and_inf_propagate_as_in_torchvision(engine):
    model = calibrated("resnet18")
    x = torch.randn(2, 3, 16, 16)
    x[0, 1, 5, 7] = float("nan")
    x[1, 0, 2, 2] = float("inf")
    ref = model(x)
    y = engine(x.to(DEVICE)).cpu()
    assert torch.equal(torch.isnan(y), torch.isnan(ref)), (y, ref)
    assert torch.equal(torch.isinf(y), torch.isinf(ref)), (y, ref)


def test_rebuild_required_for_device_moves(engine):
    with pytest.raises(RuntimeError, match="rebuild"):
        engine.to(torch.float64)


def test_engine_from_params_checks_them():
    params = fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float32, device=DEVICE).params()
    bad = dict(params)
    bad["fc.weight"] = bad["fc.weight"][:, :10]
    with pytest.raises(fastres.UnsupportedModelError, match="fc.weight"):
        fastres.ResNet("resnet18", bad, num_classes=10, dtype=torch.float32, device=DEVICE)
    bad = dict(params)
    bad["conv1.bias"] = bad["conv1.bias"].half()
    with pytest.raises(TypeError, match="conv1.bias"):
        fastres.ResNet("resnet18", bad, num_classes=10, dtype=torch.float32, device=DEVICE)


def test_repeated_shape_with_new_values_matches_reference(engine):
    """A second call at a known shape (a CUDA-graph replay on a GPU) must read the new input."""
    model = calibrated("resnet18")
    for _ in range(2):
        x = torch.randn(2, 3, 18, 14)
        assert_close(engine(x.to(DEVICE)), reference(model, x), 1e-4)
    if ON_GPU:
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            x = torch.randn(2, 3, 18, 14)
            y = engine(x.to(DEVICE))
        torch.cuda.current_stream().wait_stream(side)
        assert_close(y, reference(model, x), 1e-4)


def test_clear_frees_arenas(engine):
    engine(torch.randn(1, 3, 16, 16, device=DEVICE))
    assert engine._arenas
    engine.clear()
    assert not engine._arenas
    assert tuple(engine(torch.randn(1, 3, 16, 16, device=DEVICE)).shape) == (1, 10)


def test_bf16_engine_on_cpu_is_refused():
    if ON_GPU:
        pytest.skip("bf16 runs on a GPU")
    with pytest.raises(TypeError, match="11584"):
        fastres.from_torchvision(calibrated("resnet18"), dtype=torch.bfloat16, device="cpu")


def test_cuda_engine_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    params = fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float32, device="cpu").params()
    with pytest.raises(ValueError, match="no CUDA device"):
        fastres.ResNet("resnet18", params, num_classes=10, dtype=torch.float32, device="cuda")


def test_least_recently_used_shapes_are_freed():
    params = fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float32, device=DEVICE).params()
    fast = fastres.ResNet("resnet18", params, num_classes=10, dtype=torch.float32, device=DEVICE, max_shapes=2)
    shapes = {"a": (1, 3, 8, 8), "b": (1, 3, 9, 8), "c": (1, 3, 8, 9)}
    for name in ("a", "b", "a", "c"):
        fast(torch.randn(shapes[name], device=DEVICE))
    assert {k[1:3] for k in fast._arenas} == {(8, 8), (8, 9)}  # "b" was the least recently used
    with pytest.raises(ValueError, match="max_shapes"):
        fastres.ResNet("resnet18", params, num_classes=10, dtype=torch.float32, device=DEVICE, max_shapes=0)


def test_split_k_layers_match_and_share_one_workspace():
    """Split-K configs fixed at build: one float32 workspace sized for the biggest split layer,
    the forward still torchvision's, and later forwards (outside use_config) reuse the plan."""
    from fastres.kernels import Config, use_config

    model = calibrated("resnet18")
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    x = torch.randn(1, 3, 20, 20)
    # 3x3 convs over 64+ channels in 64-wide steps: 9+ K steps, split 3 ways; the 1x1
    # downsamples over 128+ channels 2 ways. The stem has its own space and stays unsplit.
    with use_config("conv", Config(128, 64, 64, 4, 1, SPLIT_K=3)), \
            use_config("conv1x1", Config(128, 64, 64, 4, 1, SPLIT_K=2)):
        y = fast(x.to(DEVICE))
    assert_close(y, reference(model, x), 1e-4, what="split-K resnet18")
    (arena,) = fast._arenas.values()
    # The biggest split layer: layer1's 3x3s, 3 planes of 5x5 pixels x 64 channels.
    assert arena.workspace is not None and arena.workspace.dtype == torch.float32
    assert arena.workspace.numel() == 3 * 25 * 64
    torch.testing.assert_close(fast(x.to(DEVICE)), y, rtol=0, atol=0)


# ---------------------------------------------------------------- uint8 pixels

def test_forward_pixels_is_forward_on_torchvision_normalized_input(engine):
    """The stem normalizes uint8 pixels as torchvision does: bitwise the float forward's
    logits (float32 engine), float32 logits, Triton kernels only, any layout; one arena per
    (shape, input dtype, mean/std)."""
    import torchvision.transforms.functional as TF

    pixels = torch.randint(0, 256, (2, 3, 20, 18), dtype=torch.uint8)
    floats = TF.normalize(TF.convert_image_dtype(pixels, torch.float), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.inference_mode():
        got = engine.forward_pixels(pixels.to(DEVICE))
        with OpSpy() as spy:  # a built shape (in another layout): nothing but kernels and the output's copy
            again = engine.forward_pixels(pixels.contiguous(memory_format=torch.channels_last).to(DEVICE))
        want = engine(floats.to(DEVICE))
        assert got.dtype == torch.float32 and torch.equal(got, want) and torch.equal(again, want)
        other = engine.forward_pixels(pixels.to(DEVICE), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert not [op for op in spy.ops if any(f in op for f in FORBIDDEN)], spy.ops
    norms = {key[4] for key in engine._arenas if key[3] == torch.uint8}
    assert norms == {((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.25,) * 3)}
    assert not torch.equal(other, got)


def test_forward_pixels_checks(engine):
    with pytest.raises(TypeError, match=r"x must be uint8, got torch.float32"):
        engine.forward_pixels(torch.zeros(1, 3, 16, 16, device=DEVICE))
    with pytest.raises(TypeError, match=r"uint8 pixels go to forward_pixels"):
        engine(torch.zeros(1, 3, 16, 16, dtype=torch.uint8, device=DEVICE))
    px = torch.zeros(1, 3, 16, 16, dtype=torch.uint8, device=DEVICE)
    with pytest.raises(ValueError, match=r"mean and std need 3 values"):
        engine.forward_pixels(px, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match=r"std must be positive"):
        engine.forward_pixels(px, std=(0.2, 0.0, 0.2))
    assert engine.forward_pixels(px[:0]).shape == (0, 10)


def _resnet50_for_h100(max_shapes: int = 2):
    """A float16 ResNet-50 trunk on the CPU that plans for an H100 (the configs a GPU would run,
    not the interpreter's), and its `returns`."""
    from fastres.device import DeviceInfo
    from fastres.plan import fold_params

    h100 = DeviceInfo("NVIDIA H100 80GB HBM3", sms=132)
    returns = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    trunk = {k: v for k, v in calibrated("resnet50").state_dict().items() if not k.startswith("fc.")}
    fast = fastres.ResNet("resnet50", fold_params(trunk, "resnet50", None, torch.float16), returns=returns,
                          dtype=torch.float16, device="cpu", max_shapes=max_shapes)
    fast._device_info = h100
    return fast, h100, returns


# Sizes as torchvision's detection transform makes them at its defaults (min_size 800,
# max_size 1333, padded to multiples of 32): landscape 800xW and portrait Hx800.
DETECTOR_SIZES = [(800, 832 + 64 * i) for i in range(8)] + [(800, 1344)] + [(832 + 64 * i, 800) for i in range(8)] + \
    [(1344, 800), (800, 800), (800, 1216)]
# Sizes nothing pads: odd, prime, and pairs whose H (224 / 223) or W differ in divisibility by 16
# while the stem's output sizes do not.
ODD_SIZES = [(801, 1203), (225, 225), (97, 131), (224, 225), (223, 225), (803, 1205), (800, 801)]


def test_twenty_input_sizes_compile_no_new_kernel():
    # A detector's transform feeds a new size for almost every image: each costs a plan and
    # buffers (and on CUDA a graph). Every kernel but the stem reuses the binaries the first
    # size compiled at every size; the stem compiles a new one exactly where
    # kernels.conv.stem_specialization (triton's own rule on its output sizes, and on which of
    # its input's sizes and strides are 1) changes, which no size a multiple of 32 does. The
    # launches are recorded without running.
    from fastres.gate.keys import compile_keys, recording
    from fastres.kernels.conv import stem_specialization
    from fastres.schedule import build_schedule

    fast, h100, returns = _resnet50_for_h100()
    keys, stems = {}, {}
    layouts = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
    # 1-pixel-wide and -high inputs: H or W and an input stride are the constant 1 (only the stem is checked)
    degenerate = [(97, 1), (1, 131)]
    for h, w in DETECTOR_SIZES + ODD_SIZES + degenerate:
        for layout, fmt in layouts.items():
            x = torch.randn(1, 3, h, w).contiguous(memory_format=fmt)
            with recording(run=False) as launches:
                fast(x)
            found = compile_keys(launches)
            stem = {k for k in found if k[0] == "_conv_stem_kernel"}
            assert len(stem) == 1, stem
            stems[h, w, layout] = (stem, stem_specialization(x.shape, strides=x.stride()))
            if (h, w) not in degenerate:
                keys[h, w] = found - stem
    first = keys[DETECTOR_SIZES[0]]
    assert len(DETECTOR_SIZES) == 20 and len(first) > 5
    # Past the stem, only a layer that moves between split and unsplit (the small sizes: 225x225
    # and co split layers the large ones do not) compiles its tile's other form, once.
    new = {size: k - first for size, k in keys.items() if not k <= first}
    assert len(set(map(frozenset, new.values()))) <= 1, \
        f"sizes whose kernels past the stem compile anew (size: how many): { {s: len(k) for s, k in new.items()} }"
    assert all(k[0] == "_splitk_reduce_kernel" or dict(k[1]).get("SPLIT") == ("constexpr", True)
               for k in set().union(*new.values())), new
    # The stem: one binary per specialization, and the same binary for the same one.
    by_spec: dict = {}
    for stem, spec in stems.values():
        by_spec.setdefault(spec, set()).update(stem)
    assert all(len(s) == 1 for s in by_spec.values()), by_spec
    binaries = {(h, w, layout): next(iter(stem)) for (h, w, layout), (stem, _) in stems.items()}
    # Per layout three: OH, OW and M all multiples of 16; none of them (801x1203 and co); all
    # but OW. And one per layout and degenerate size (H or W, OH or OW and a stride are 1).
    assert len(set(binaries.values())) == len(by_spec) == 2 * 3 + 2 * len(degenerate)
    for layout in layouts:
        assert len({binaries[h, w, layout] for h, w in DETECTOR_SIZES}) == 1
        assert binaries[801, 1203, layout] == binaries[225, 225, layout] == binaries[97, 131, layout] \
            == binaries[803, 1205, layout]
        assert binaries[224, 225, layout] == binaries[223, 225, layout] == binaries[800, 801, layout]  # H 224, 223 alike
    # NCHW and channels_last inputs run binaries of their own (sxw or sxc the constant 1)
    assert not {v for (*_, layout), v in binaries.items() if layout == "nchw"} & \
        {v for (*_, layout), v in binaries.items() if layout == "nhwc"}
    # The heuristic alone would have picked other tiles at some of these sizes: kept, not re-picked.
    heuristic = {(s.layer, s.config) for s in build_schedule("resnet50", (1, 3, 800, 1344), torch.float16, h100,
                                                             returns=returns).steps}
    assert heuristic != {(s.layer, s.config) for s in fast.schedule((1, 3, 800, 1344)).steps}
    # Another batch is planned afresh.
    assert fast.schedule((2, 3, 800, 1344)) == build_schedule("resnet50", (2, 3, 800, 1344), torch.float16, h100,
                                                              returns=returns)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_new_input_sizes_compile_what_stem_specialization_says_on_cuda():
    """triton's own count: the binaries in every launched kernel's JIT cache
    (``device_caches[device][0]``, triton 3.6 and 3.8) before and after forwards at new sizes.
    Past the first size the stem compiles once per new ``stem_specialization``, and the other
    kernels only what the interpreter test above allows: a layer that moves between split and
    unsplit compiles its tile's split form (and the reduce), once, as its compile keys say."""
    from fastres.gate.keys import compile_keys, kernel_name, recording
    from fastres.kernels.conv import stem_specialization

    fast = fastres.from_torchvision(calibrated("resnet50"), dtype=torch.float16, device="cuda")
    fns, specs, seen = {}, set(), set()

    def compiled() -> dict:
        dev = torch.cuda.current_device()
        return {name: len(fn.device_caches[dev][0]) for name, fn in fns.items()}

    first = True
    for h, w in [(800, 832), (832, 800), (800, 1344)] + ODD_SIZES:
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(1, 3, h, w, device="cuda").contiguous(memory_format=layout)
            before = compiled()
            with recording() as launches:
                fast(x)
            torch.cuda.synchronize()
            fns.update({kernel_name(fn): fn for fn, _ in launches})
            after = compiled()
            grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
            spec = stem_specialization(x.shape, strides=x.stride())
            keys = {k for k in compile_keys(launches) if k[0] != "_conv_stem_kernel"}
            if first:
                first = False
            else:
                new = keys - seen
                assert all(k[0] == "_splitk_reduce_kernel" or dict(k[1]).get("SPLIT") == ("constexpr", True)
                           for k in new), (h, w, new)
                assert {k: n for k, n in grew.items() if k != "_conv_stem_kernel"} == \
                    {name: sum(k[0] == name for k in new) for name in {k[0] for k in new}}, (h, w, grew, new)
                assert grew.get("_conv_stem_kernel", 0) == (0 if spec in specs else 1), (h, w, grew, spec, specs)
            specs.add(spec)
            seen |= keys


def _bordered_schedule(schedule):
    """`schedule` with every stride-1 3x3 on the bordered kernel, each with its own K step and
    column tile, 64 rows."""
    from fastres.kernels import Config
    from fastres.schedule import CONV

    return schedule.with_configs({
        i: Config(64, st.config.BLOCK_N, st.config.BLOCK_K, 4, 1, variant="tma_b")
        for i, st in enumerate(schedule.steps) if st.kernel == CONV and st.spec.stride == 1 and st.spec.k == 3})


def test_resnet50_bordered_forward_matches_the_default():
    """ResNet-50 at batch 2 with every stride-1 3x3 on tma_b (their inputs in bordered slots,
    written by 1x1 GEMMs into the interior) gives the default forward's logits within DESIGN's
    float32 bounds: 1e-5 of the default forward (one kernel's bound: the two differ only in
    summation order) and 1e-4 of torchvision's float64 forward (a network's). Not bit for bit:
    the bordered kernel's row tiles are rows of the bordered map, so its tl.dot operands differ
    in shape from the pointer kernel's, and under the interpreter BLAS may sum those in another
    order (OpenBLAS's Haswell and Zen kernels do). After the forward every border is still zero,
    exactly."""
    from fastres.arena import Arena
    from fastres.kernels.launch import recording

    model = calibrated("resnet50")
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    x = torch.randn(2, 3, 32, 36, device=DEVICE)
    default = fast(x)
    schedule = _bordered_schedule(fast.schedule(x))
    bordered = [i for i, b in enumerate(schedule.borders) if b is not None]
    assert len(bordered) == 4  # one per stage: the 3x3s' inputs of each shape
    arena = Arena(schedule, fast.params(), fast.device, x.dtype)
    for i in bordered:  # poison the interiors: only the producers' writes may be read
        arena.view(i, schedule.borders[i].shape).fill_(float("nan"))
    with recording() as launches:
        logits = arena.forward(x)
    ran = [launch.kernel for launch in launches]
    assert ran.count("_conv_bordered_kernel") == 13  # 16 bottlenecks, 3 of them with a stride-2 3x3
    assert_close(logits, default, 1e-5, "bordered forward against the default forward")
    assert_close(logits, reference(model, x), 1e-4, "bordered forward against float64")
    for i in bordered:
        full = arena.bordered_view(i)
        ph, pw = schedule.borders[i].pad
        inner = torch.zeros(full.shape, dtype=torch.bool, device=full.device)
        inner[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw] = True
        assert not full[~inner].any(), f"slot {i}: a border was written"
        assert torch.isfinite(full[inner]).all(), f"slot {i}: interior left unwritten"


def test_a_larger_size_keeps_the_tile_but_plans_its_own_split():
    # Planned for a 4-SM card, layer1's convs split their K loop 4 ways at 32x32 (one tile) and
    # not at all at 64x64 (four tiles): the layer keeps the tile the first size compiled, but
    # not that size's split, which would cost the larger one a workspace and a reduce launch
    # per conv. The first size is built without running (its launches only recorded).
    from fastres.device import DeviceInfo
    from fastres.gate.keys import recording
    from fastres.schedule import build_schedule

    small = DeviceInfo("a 4-SM card", sms=4)
    model = calibrated("resnet18")
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    fast._device_info = small
    with recording(run=False):
        fast(torch.randn(1, 3, 32, 32, device=DEVICE))
    ran = {s.layer: s for s in fast.schedule((1, 3, 32, 32)).steps}
    assert ran["layer1.0.conv1"].splits == 4
    planned = build_schedule("resnet18", (1, 3, 64, 64), torch.float32, small, num_classes=10)
    got = fast.schedule((1, 3, 64, 64))
    for step, plan in zip(got.steps, planned.steps):
        assert tile_of(step.config) == tile_of(ran[step.layer].config)  # the tile the first size compiled
        assert (step.layer, step.config, step.splits, step.workspace) == \
            (plan.layer, plan.config, plan.splits, plan.workspace)
    assert [s.layer for s in got.steps if s.layer.startswith("layer1.") and s.splits > 1] == []
    x = torch.randn(1, 3, 64, 64, device=DEVICE)
    assert_close(fast(x).double().cpu(), reference(model, x), 1e-4, "logits at the second size")
