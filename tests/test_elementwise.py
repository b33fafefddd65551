"""Parity of fastres.kernels.add_relu with torch: relu(x + residual) in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastres import kernels as K
from fastres.kernels import Config, use_config
from helpers import DTYPES, KERNEL_RTOL, ON_GPU, assert_close, rand_nhwc


def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def ref_add_relu(x, residual):
    """torch reference in float64 on the CPU."""
    return F.relu(x.double().cpu() + residual.double().cpu())


def poisoned(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)


SHAPES = [
    (1, 64, 56, 56),      # ResNet layer1 at 224 (one image): several blocks of BLOCK_M
    (3, 24, 7, 5),        # odd everything
    (2, 3, 9, 11),
    (1, 1, 1, 1),
    (2, 2048, 1, 3),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_add_relu(shape, dtype, device):
    x = rand_nhwc(*shape, dtype=dtype, device=device)
    r = rand_nhwc(*shape, dtype=dtype, device=device)
    out = poisoned(shape, dtype, device)
    y = K.add_relu(x, r, out=out)
    assert y.data_ptr() == out.data_ptr() and y.dtype == dtype
    ref = ref_add_relu(x, r)
    if ref.numel() >= 16:
        assert (ref == 0).any() and (ref > 0).any(), "data should exercise both sides of the ReLU"
    assert_close(y, ref, KERNEL_RTOL[dtype], what="add_relu")
    if dtype != torch.bfloat16:
        # One fp32 sum, one rounding: bitwise what torch gives for the same float32 sum.
        assert torch.equal(y.cpu(), F.relu(x.float().cpu() + r.float().cpu()).to(dtype))


def test_allocates_channels_last(device):
    x = rand_nhwc(2, 8, 5, 3, device=device)
    r = rand_nhwc(2, 8, 5, 3, device=device)
    y = K.add_relu(x, r)
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, ref_add_relu(x, r), KERNEL_RTOL[torch.float32])


@pytest.mark.parametrize("block", [64, 128, 1024])
def test_forced_block(block, device):
    """numel = 3*5*7*9 = 945 is not a multiple of any block: the tail is masked."""
    x = rand_nhwc(3, 5, 7, 9, device=device)
    r = rand_nhwc(3, 5, 7, 9, device=device)
    out = poisoned(x.shape, x.dtype, device)
    with use_config("add_relu", Config(block)):
        y = K.add_relu(x, r, out=out)
    assert_close(y, ref_add_relu(x, r), KERNEL_RTOL[torch.float32])
    out2 = poisoned(x.shape, x.dtype, device)
    assert_close(K.add_relu(x, r, out=out2, config=Config(block)), ref_add_relu(x, r), KERNEL_RTOL[torch.float32])


def test_batch_slice_views(device):
    """Channels_last batch slices (storage offsets) for x, residual and out."""
    bx = rand_nhwc(4, 6, 5, 5, device=device)
    br = rand_nhwc(4, 6, 5, 5, device=device)
    bo = poisoned((4, 6, 5, 5), torch.float32, device)
    y = K.add_relu(bx[1:3], br[2:4], out=bo[1:3])
    assert_close(y, ref_add_relu(bx[1:3], br[2:4]), KERNEL_RTOL[torch.float32])
    assert torch.isnan(bo[0]).all() and torch.isnan(bo[3]).all()


def test_in_place_into_x(device):
    """out=x (what an engine does to save a buffer) is elementwise-safe."""
    x = rand_nhwc(2, 16, 5, 7, device=device)
    r = rand_nhwc(2, 16, 5, 7, device=device)
    ref = ref_add_relu(x, r)
    K.add_relu(x, r, out=x)
    assert_close(x, ref, KERNEL_RTOL[torch.float32])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_nan_inf_propagate(dtype, device):
    x = rand_nhwc(2, 8, 4, 5, dtype=dtype, device=device)
    r = rand_nhwc(2, 8, 4, 5, dtype=dtype, device=device)
    x[0, 1, 2, 3] = float("nan")
    r[1, 2, 0, 0] = float("nan")
    x[1, 3, 3, 4] = float("inf")
    x[0, 0, 0, 0] = float("-inf")
    x[0, 5, 1, 1], r[0, 5, 1, 1] = float("inf"), float("-inf")   # inf - inf = nan
    y = K.add_relu(x, r).double().cpu()
    ref = ref_add_relu(x, r)
    assert int(torch.isnan(ref).sum()) == 3 and int(torch.isinf(ref).sum()) == 1
    assert torch.equal(torch.isnan(y), torch.isnan(ref)), "NaN positions differ from torch"
    assert torch.equal(torch.isinf(y), torch.isinf(ref)), "Inf positions differ from torch"
    fin = torch.isfinite(ref)
    assert torch.equal(y[~fin & ~torch.isnan(ref)], ref[~fin & ~torch.isnan(ref)])
    assert_close(y[fin], ref[fin], KERNEL_RTOL[dtype], what="finite part")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_empty_batch(dtype, device):
    x = rand_nhwc(0, 8, 3, 3, dtype=dtype, device=device)
    y = K.add_relu(x, rand_nhwc(0, 8, 3, 3, dtype=dtype, device=device))
    assert y.shape == (0, 8, 3, 3) and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- bad input

def test_bad_input(device):
    x = rand_nhwc(2, 8, 5, 5, device=device)
    r = rand_nhwc(2, 8, 5, 5, device=device)
    with pytest.raises(ValueError, match=r"x must have rank 4, got rank 3 with shape \(8, 5, 5\)"):
        K.add_relu(x[0], r)
    with pytest.raises(ValueError, match=r"residual must have rank 4, got rank 2"):
        K.add_relu(x, r.reshape(2, -1))
    with pytest.raises(ValueError, match=r"x must be channels_last .*shape \(2, 8, 5, 5\)"):
        K.add_relu(x.contiguous(), r)
    with pytest.raises(ValueError, match=r"residual must be channels_last .*shape \(2, 8, 5, 5\)"):
        K.add_relu(x, r.contiguous())
    with pytest.raises(ValueError, match=r"residual must have shape \(2, 8, 5, 5\) \(the output's\), got \(2, 8, 5, 4\)"):
        K.add_relu(x, rand_nhwc(2, 8, 5, 4, device=device))
    with pytest.raises(TypeError, match=r"residual has dtype torch.float16 but x has dtype torch.float32"):
        K.add_relu(x, r.half())
    with pytest.raises(TypeError, match=r"x must have dtype in .*got torch.int32"):
        K.add_relu(x.int(), r.int())
    with pytest.raises(ValueError, match=r"residual is on meta but x is on .*one device"):
        K.add_relu(x, r.to("meta"))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 8, 5, 5\) \(the output's\), got \(2, 8, 5, 4\)"):
        K.add_relu(x, r, out=poisoned((2, 8, 5, 4), torch.float32, device))
    with pytest.raises(TypeError, match=r"out must have dtype torch.float32 .*got torch.float16"):
        K.add_relu(x, r, out=poisoned((2, 8, 5, 5), torch.float16, device))
    with pytest.raises(ValueError, match=r"out must be channels_last"):
        K.add_relu(x, r, out=torch.empty(2, 8, 5, 5, device=device))


def test_cpu_without_interpreter(monkeypatch):
    x = rand_nhwc(1, 4, 3, 3, device=torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"x is a CPU tensor.*need a CUDA device.*TRITON_INTERPRET=1"):
        K.add_relu(x, x)


# ---------------------------------------------------------------- past 2**31 elements

@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs > 2**31 elements (13 GB); on CPU the int64 offset arithmetic "
                                       "is covered by test_indexing.py")
def test_flat_index_past_2_31(device):
    """A flat index past 2**31 must address the right element (int64 program offsets)."""
    C = 64
    n = 2**31 // C + 201                       # 2**31 + 12864 elements: past int32, a masked tail
    numel = n * C
    need = 3 * numel * 2 + numel + (2 << 30)   # x, residual, out in fp16, a bool mask, slack
    free, _ = torch.cuda.mem_get_info(device)
    if free < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    shape = (n, C, 1, 1)
    x = torch.empty(shape, dtype=torch.float16, device=device).contiguous(memory_format=torch.channels_last).normal_()
    r = torch.empty_like(x).normal_()
    out = torch.full_like(x, float("nan"))
    K.add_relu(x, r, out=out)
    xf, rf, of = x.view(-1), r.view(-1), out.view(-1)
    for lo in (0, 2**31 - 5000, 2**31 - 1, 2**31 + 4096, numel - 5000):
        sl = slice(lo, min(lo + 5000, numel))
        ref = torch.relu(xf[sl].float() + rf[sl].float()).half()
        bad = (of[sl] != ref).nonzero()
        assert bad.numel() == 0, f"wrong value at flat index {lo + int(bad[0])}: {of[sl][bad[0]]} != {ref[bad[0]]}"
    assert not torch.isnan(out).any(), "elements left unwritten"


def test_out_shifted_over_an_input_is_refused(device):
    big = rand_nhwc(3, 8, 4, 4, device=device)
    r = rand_nhwc(2, 8, 4, 4, device=device)
    with pytest.raises(ValueError, match=r"out overlaps x"):
        K.add_relu(big[1:], r, out=big[:-1])
