"""fastres.gate.keys: the compile keys of recorded launches, and that a new input size needs no
new binary (sizes that vary with the batch or the image are not specialized on)."""
from __future__ import annotations

import torch

from fastres import kernels as K
from fastres.gate.keys import compile_key, compile_keys, jit_class, recording, unaligned, unspecialized
from fastres.kernels import Config, use_config
from fastres.kernels.conv import _conv_kernel, _conv_stem_kernel
from helpers import rand_nhwc

# Fixed tiles (the interpreter's own configs follow the problem size); SPLIT_K 2 so the split
# launches (partials, reduce) are among those checked.
_TILES = {
    "conv": Config(16, 16, 16, 4, 1), "conv_stem": Config(16, 16, 16, 4, 1), "conv_grouped": Config(16, 16, 16, 4, 1),
    "conv1x1": Config(16, 16, 16, 4, 1, SPLIT_K=2), "max_pool2d": Config(16, 16, 1, 4, 1),
    "add_relu": Config(256, 1, 1, 4, 1), "avgpool": Config(16, 16, 1, 4, 1), "splitk_reduce": Config(16, 16, 1, 4, 1),
}


def _forward(n: int, h: int, w: int) -> None:
    """A miniature trunk and head at input [n, 3, h, w] (NCHW, as a detector's transform hands it)."""
    torch.manual_seed(0)
    x = torch.randn(n, 3, h, w)
    stem = K.stem_conv(x, rand_nhwc(16, 3, 7, 7), torch.zeros(16))
    p = K.max_pool2d(stem)
    a = K.conv_bn_relu(p, rand_nhwc(32, 16, 3, 3), torch.zeros(32), padding=1)
    g = K.conv_bn_relu(a, rand_nhwc(32, 4, 3, 3), torch.zeros(32), padding=2, dilation=2, groups=8)
    y = K.conv1x1(g, rand_nhwc(32, 32, 1, 1), torch.zeros(32), residual=a)
    K.add_relu(y, a)
    K.avgpool_fc(y, torch.randn(10, 32), torch.zeros(10))


def _keys(n, h, w) -> set:
    with use_config("conv", _TILES["conv"]), use_config("conv_stem", _TILES["conv_stem"]), \
            use_config("conv_grouped", _TILES["conv_grouped"]), use_config("conv1x1", _TILES["conv1x1"]), \
            use_config("max_pool2d", _TILES["max_pool2d"]), use_config("add_relu", _TILES["add_relu"]), \
            use_config("avgpool", _TILES["avgpool"]), use_config("splitk_reduce", _TILES["splitk_reduce"]):
        with recording() as launches:
            _forward(n, h, w)
    assert launches
    return compile_keys(launches)


def _past_stem(keys: set) -> set:
    """All but the stem (specialized on the input's sizes) and the classifier's linear layer
    (on the batch): kernels/conv.py, kernels/head.py."""
    return {k for k in keys if k[0] not in ("_conv_stem_kernel", "_fc_kernel")}


def test_new_input_sizes_compile_nothing():
    """Past the stem, odd and even sizes, sizes divisible by 16 and not, batch 1 and 3: one set
    of binaries; the stem's and the classifier's too at sizes a multiple of 32 (as the detectors'
    transform pads them) and one batch."""
    first = _keys(1, 32, 64)
    names = {k[0] for k in first}
    assert {"_conv_kernel", "_conv_stem_kernel", "_gemm1x1_kernel", "_splitk_reduce_kernel", "_max_pool_kernel",
            "_add_relu_kernel", "_avgpool_kernel", "_fc_kernel"} <= names, names
    assert _keys(1, 64, 32) == first
    for n, h, w in ((1, 33, 47), (3, 21, 26), (2, 64, 17)):
        assert _past_stem(_keys(n, h, w)) == _past_stem(first), (n, h, w)


def test_keys_tell_specializations_apart():
    """What the JIT does specialize on changes the key: a channel count's divisibility by 16."""
    with recording(run=False) as launches:
        for c in (16, 24):
            K.conv_bn_relu(rand_nhwc(1, c, 5, 5), rand_nhwc(16, c, 3, 3), torch.zeros(16), padding=1,
                           config=Config(16, 16, 16, 4, 1))
    a, b = (compile_key(launch) for launch in launches)
    assert a != b and a[0] == b[0] == "_conv_kernel"


def test_jit_class():
    assert jit_class(1) == ("constexpr", 1) and jit_class(32) == ("i32", True) and jit_class(33) == ("i32", False)
    assert jit_class(1, specialize=False) == jit_class(32, specialize=False) == ("i32",)
    assert jit_class(1, align=False) == ("constexpr", 1) and jit_class(32, align=False) == ("i32", False)
    assert jit_class(2**40) == ("i64", True)
    assert jit_class(torch.zeros(4, dtype=torch.float16)) == ("ptr", "float16", True)
    assert jit_class(True, constexpr=True) == ("constexpr", True)


def test_sizes_are_unspecialized_and_channels_are_not():
    conv = unspecialized(_conv_kernel)
    assert {"M", "H", "W", "OH", "OW", "ITERS"} <= conv
    assert not {"C", "CO", "CIG", "COG", "DH", "DW", "sxw", "sxc", "swo", "sws"} & conv
    assert not unaligned(_conv_kernel)
    # The stem keeps its output sizes specialized (unspecialized they spilled) and takes the
    # input's sizes and strides off alignment only: 1 stays a constant (the layout), a multiple
    # of 16 is not told apart (the size), as kernels.conv.stem_specialization says.
    assert not unspecialized(_conv_stem_kernel)
    assert unaligned(_conv_stem_kernel) == {"H", "W", "sxn", "sxh", "sxw", "sxc"}
