"""Index arithmetic past 2**31: fastres.kernels.indexing.nhwc_row_offsets (the kernels' nhwc_rows
run on given pixel indices) against Python's unbounded int math."""
from __future__ import annotations

import pytest
import torch

from fastres.kernels import indexing

INT32_MAX = 2**31 - 1


def ref_nhwc_row_offsets(m, *, out_hw, stride, padding, strides):
    """Python int reference: offset of input pixel (n, oh*SH - PH, ow*SW - PW) of output pixel m."""
    (OH, OW), (SH, SW), (PH, PW), (sn, sh, sw) = out_hw, stride, padding, strides
    res = []
    for mi in m.tolist():
        n, rem = divmod(mi, OH * OW)
        oh, ow = divmod(rem, OW)
        res.append(n * sn + (oh * SH - PH) * sh + (ow * SW - PW) * sw)
    return torch.tensor(res, dtype=torch.int64)


def _pixels(n_lo, n_hi, OH, OW, count, device):
    """`count` random output-pixel indices of images n_lo..n_hi-1, plus both ends of the range."""
    lo, hi = n_lo * OH * OW, n_hi * OH * OW
    assert hi - 1 <= INT32_MAX
    m = torch.randint(lo, hi, (count,), dtype=torch.int64)
    m = torch.cat([m, torch.tensor([lo, lo + OW - 1, hi - OW, hi - 1])])
    return m.to(torch.int32).to(device)


CASES = {
    # A 56x56x256 activation (ResNet-50 layer1 output at 224): 802816 elements an image, so
    # images past n = 2675 start beyond 2**31 elements (a batch of 3000 is 2.4e9 elements).
    "layer1_batch3000": dict(n=(2600, 3000), out_hw=(56, 56), stride=(1, 1), padding=(0, 0),
                             strides=(56 * 56 * 256, 56 * 256, 256)),
    # The stem conv: 112x112 outputs reading a 224x224x3 image, stride 2, padding 3 (negative
    # input coordinates at the border); per-image stride 150528, past 2**31 from n = 14267.
    "stem_batch15000": dict(n=(14200, 15000), out_hw=(112, 112), stride=(2, 2), padding=(3, 3),
                            strides=(224 * 224 * 3, 224 * 3, 3)),
    # The downsample 1x1 stride 2 reading 28x28x512 (layer2 output), 401408 an image.
    "proj_s2_batch6000": dict(n=(5300, 6000), out_hw=(14, 14), stride=(2, 2), padding=(0, 0),
                              strides=(28 * 28 * 512, 28 * 512, 512)),
    # A strided view whose per-image stride alone is past int32.
    "huge_image_stride": dict(n=(0, 3), out_hw=(5, 7), stride=(1, 1), padding=(1, 1),
                              strides=(3 * 2**30 + 12345, 7 * 64, 64)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_offsets_past_2_31(name, device):
    c = CASES[name]
    OH, OW = c["out_hw"]
    m = _pixels(*c["n"], OH, OW, 2000, device)
    kw = {k: c[k] for k in ("out_hw", "stride", "padding", "strides")}
    got = indexing.nhwc_row_offsets(m, **kw)
    ref = ref_nhwc_row_offsets(m.cpu(), **kw)
    assert got.dtype == torch.int64 and got.shape == m.shape
    assert ref.max().item() > INT32_MAX, "the case must cross 2**31 to mean anything"
    bad = (got.cpu() != ref).nonzero()
    assert bad.numel() == 0, (
        f"{bad.numel()} wrong offsets, first at m={int(m[bad[0, 0]])}: got {int(got[bad[0, 0]])}, "
        f"expected {int(ref[bad[0, 0]])}"
    )


def test_negative_offsets_at_the_border(device):
    """Padding makes the first window start before the image: the offset is negative, not wrapped."""
    m = torch.arange(0, 8, dtype=torch.int32, device=device)
    kw = dict(out_hw=(4, 4), stride=(2, 2), padding=(3, 3), strides=(8 * 8 * 3, 8 * 3, 3))
    got = indexing.nhwc_row_offsets(m, **kw).cpu()
    ref = ref_nhwc_row_offsets(m.cpu(), **kw)
    assert torch.equal(got, ref) and got[0].item() == -3 * 24 - 3 * 3


def test_empty_and_tail(device):
    """COUNT not a multiple of the probe's block; COUNT = 0 launches nothing."""
    kw = dict(out_hw=(3, 5), stride=(1, 1), padding=(0, 0), strides=(15 * 4, 5 * 4, 4))
    m = torch.arange(0, 300, dtype=torch.int32, device=device)
    assert torch.equal(indexing.nhwc_row_offsets(m, **kw).cpu(), ref_nhwc_row_offsets(m.cpu(), **kw))
    e = indexing.nhwc_row_offsets(m[:0], **kw)
    assert e.shape == (0,) and e.dtype == torch.int64


def test_bad_input(device):
    kw = dict(out_hw=(3, 5), stride=(1, 1), padding=(0, 0), strides=(60, 20, 4))
    with pytest.raises(TypeError, match=r"m must be a 1-D int32 tensor, got torch.int64 with shape \(4,\)"):
        indexing.nhwc_row_offsets(torch.arange(4, device=device), **kw)
    with pytest.raises(TypeError, match=r"m must be a 1-D int32 tensor, got torch.int32 with shape \(2, 2\)"):
        indexing.nhwc_row_offsets(torch.zeros(2, 2, dtype=torch.int32, device=device), **kw)


def test_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match=r"is a CPU tensor.*need a CUDA device.*TRITON_INTERPRET=1"):
        indexing.nhwc_row_offsets(torch.arange(4, dtype=torch.int32), out_hw=(2, 2), stride=(1, 1),
                                  padding=(0, 0), strides=(4, 2, 1))
