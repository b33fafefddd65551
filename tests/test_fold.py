"""fastres.kernels.fold_bn against the formula in float64 and against torch's eval-mode conv + BN.

    w' = w * g / sqrt(var + eps),   b' = beta + (conv_bias - mean) * g / sqrt(var + eps)
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastres import kernels as K
from helpers import DTYPES, KERNEL_RTOL, assert_close, rand_nhwc, rel_error


def dtype_id(d) -> str:
    return str(d).removeprefix("torch.")


def ref_fold_bn(w, gamma, beta, mean, var, eps, conv_bias=None):
    """The formula, term by term, in float64 on the CPU."""
    w, gamma, beta, mean, var = (t.double().cpu() for t in (w, gamma, beta, mean, var))
    scale = gamma / torch.sqrt(var + eps)
    cb = conv_bias.double().cpu() if conv_bias is not None else torch.zeros_like(mean)
    return w * scale.view(-1, 1, 1, 1), beta + (cb - mean) * scale


def ref_conv_bn(x, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d):
    """torch's eval-mode conv + BatchNorm in float64 on the CPU."""
    conv64 = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                             bias=conv.bias is not None).double()
    conv64.load_state_dict({k: v.double().cpu() for k, v in conv.state_dict().items()})
    bn64 = torch.nn.BatchNorm2d(bn.num_features, eps=bn.eps).double()
    bn64.load_state_dict({k: (v.double() if v.is_floating_point() else v).cpu() for k, v in bn.state_dict().items()})
    with torch.no_grad():
        return bn64.eval()(conv64.eval()(x.double().cpu()))


def make_conv_bn(cin, cout, k, *, conv_bias=False, dtype=torch.float32, device="cpu"):
    """A conv and a BN with non-trivial statistics (gamma in [0.05, 1.5], var in [0.01, 4])."""
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2, bias=conv_bias)
    bn = torch.nn.BatchNorm2d(cout, eps=1e-5)
    with torch.no_grad():
        bn.weight.uniform_(0.05, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.01, 4.0)
    return conv.to(device=device, dtype=dtype).eval(), bn.to(device=device, dtype=dtype).eval()


def _fold(conv, bn, **kw):
    return K.fold_bn(conv.weight.detach(), bn.weight.detach(), bn.bias.detach(), bn.running_mean, bn.running_var,
                     bn.eps, conv_bias=None if conv.bias is None else conv.bias.detach(), **kw)


@pytest.mark.parametrize("conv_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("k,cin,cout", [(1, 64, 256), (3, 24, 40), (7, 3, 64)], ids=["1x1", "3x3", "7x7"])
def test_float64_matches_formula_and_torch(k, cin, cout, conv_bias, device):
    conv, bn = make_conv_bn(cin, cout, k, conv_bias=conv_bias, dtype=torch.float64, device=device)
    w, b = _fold(conv, bn)
    assert w.dtype == torch.float64 and w.shape == conv.weight.shape and w.device == conv.weight.device
    assert w.is_contiguous(memory_format=torch.channels_last)
    assert b.dtype == torch.float32 and b.shape == (cout,) and b.is_contiguous()
    rw, rb = ref_fold_bn(conv.weight.detach(), bn.weight.detach(), bn.bias.detach(), bn.running_mean,
                         bn.running_var, bn.eps, None if conv.bias is None else conv.bias.detach())
    assert rel_error(w, rw) <= 1e-12, rel_error(w, rw)
    assert torch.equal(b.cpu(), rb.float()), "the bias is the float64 result rounded once to float32"
    # Against torch: conv with the folded weights + the folded bias == bn(conv(x)) in eval mode.
    x = torch.randn(2, cin, 6, 5, dtype=torch.float64)
    ref = ref_conv_bn(x, conv, bn)
    y_w = F.conv2d(x, w.cpu(), rb, padding=k // 2)              # float64 bias: the fold alone
    assert rel_error(y_w, ref) <= 1e-12, rel_error(y_w, ref)
    y = F.conv2d(x, w.cpu(), b.cpu().double(), padding=k // 2)  # float32 bias, as shipped
    assert_close(y, ref, 1e-7, what="conv with folded weights and float32 bias")


@pytest.mark.parametrize("src", [torch.float32, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("dst", [None, torch.float32, torch.float16, torch.bfloat16], ids=lambda d: dtype_id(d) if d else "same")
def test_computed_in_float64_then_cast(src, dst, device):
    """The result is the float64 formula rounded once to the target dtype (bitwise)."""
    conv, bn = make_conv_bn(16, 32, 3, dtype=src, device=device)
    w, b = _fold(conv, bn, dtype=dst)
    want = dst or src
    assert w.dtype == want and b.dtype == torch.float32
    assert w.is_contiguous(memory_format=torch.channels_last)
    rw, rb = ref_fold_bn(conv.weight.detach(), bn.weight.detach(), bn.bias.detach(), bn.running_mean,
                         bn.running_var, bn.eps)
    assert torch.equal(w.cpu(), rw.to(want)), "weights are not the float64 result rounded once"
    assert torch.equal(b.cpu(), rb.float())


def test_inputs_untouched(device):
    conv, bn = make_conv_bn(8, 16, 3, conv_bias=True, device=device)
    before = [t.detach().clone() for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)]
    w, _ = _fold(conv, bn)
    after = [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]
    assert all(torch.equal(a.detach(), b) for a, b in zip(after, before))
    assert w.data_ptr() != conv.weight.data_ptr()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_folded_weights_through_the_kernel(dtype, device):
    """fold_bn + conv_bn_relu == relu(bn(conv(x))) in eval mode (float64 reference)."""
    conv, bn = make_conv_bn(24, 40, 3, conv_bias=True, device=device)
    w, b = _fold(conv, bn, dtype=dtype)
    x = rand_nhwc(2, 24, 7, 5, dtype=dtype, device=device)
    y = K.conv_bn_relu(x, w, b, padding=1)
    assert_close(y, F.relu(ref_conv_bn(x, conv, bn)), KERNEL_RTOL[dtype], what="folded conv+bn+relu")


def test_bad_shapes(device):
    conv, bn = make_conv_bn(8, 16, 3, device=device)
    w, g, beta, mu, var = conv.weight.detach(), bn.weight.detach(), bn.bias.detach(), bn.running_mean, bn.running_var
    with pytest.raises(ValueError, match=r"conv_weight must be a \[Cout, Cin, KH, KW\] tensor, got \(16, 8, 3\)"):
        K.fold_bn(w[..., 0], g, beta, mu, var, 1e-5)
    with pytest.raises(ValueError, match=r"conv_weight must be a \[Cout, Cin, KH, KW\] tensor, got list"):
        K.fold_bn([1.0], g, beta, mu, var, 1e-5)
    with pytest.raises(ValueError, match=r"bn_weight must have shape \(16,\) to match conv_weight \(16, 8, 3, 3\), got \(15,\)"):
        K.fold_bn(w, g[:15], beta, mu, var, 1e-5)
    with pytest.raises(ValueError, match=r"bn_bias must have shape \(16,\).*got \(1, 16\)"):
        K.fold_bn(w, g, beta[None], mu, var, 1e-5)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(16,\).*got \(32,\)"):
        K.fold_bn(w, g, beta, torch.cat([mu, mu]), var, 1e-5)
    with pytest.raises(ValueError, match=r"running_var must have shape \(16,\).*got float"):
        K.fold_bn(w, g, beta, mu, 1.0, 1e-5)
    with pytest.raises(ValueError, match=r"conv_bias must have shape \(16,\).*got \(8,\)"):
        K.fold_bn(w, g, beta, mu, var, 1e-5, conv_bias=torch.zeros(8, device=device))
    with pytest.raises(ValueError, match=r"eps must be > 0, got 0"):
        K.fold_bn(w, g, beta, mu, var, 0)
    with pytest.raises(ValueError, match=r"eps must be > 0, got -1e-05"):
        K.fold_bn(w, g, beta, mu, var, -1e-5)
