"""fastres' Triton kernels (shipped as ``fastres.kernels``). All activations are channels_last.

    conv_bn_relu(x, w, b, *, stride=1, padding=0, dilation=1, groups=1, relu=True, residual=None)
    conv1x1(x, w, b, *, stride=1, relu=True, residual=None)
    stem_conv(x, w, b, *, stride=2, padding=3)   (any input layout and float dtype;
        uint8 pixels with normalize=pixel_norm(mean, std))
    add_relu(x, residual)
    max_pool2d(x, kernel_size=3, stride=2, padding=1)
    avgpool_fc(x, w, b)
    zero_bordered(x, padding)   (x's copy inside a zero-bordered map: the input of the bordered
        convs, config variants tma_b / tma_b_ws; the convs and the max pool also write into
        and read from such interior windows)
    fold_bn(conv_weight, bn_weight, bn_bias, running_mean, running_var, eps)

The convs and avgpool_fc take config= (a Config; SPLIT_K > 1 splits the K loop over a second
launch, or sums it in the split kernel for a fused config; Config.variant picks the pointer or
the TMA kernels), workspace= (float32 scratch for partial sums and the head's pooled
features) and counters= (a fused split's int32 arrival counters, zero; COUNTER_WORDS of them
serve any launch).
Inside `with precompiling():` launches only compile, on a thread pool (see kernels/launch.py).
On CPU tensors they run only under TRITON_INTERPRET=1; otherwise they need a CUDA device.
"""
if __name__ == "kernels":
    # This folder is fastres.kernels. Imported by the bare name (a checkout's root on sys.path,
    # as `python -m ...` run from there puts it), it would shadow the PyPI package `kernels`,
    # which transformers imports: the bare name goes to that package, or fails as if absent.
    import importlib.util as _util
    import os as _os
    import sys as _sys
    from importlib.machinery import PathFinder as _PathFinder

    _root = _os.path.dirname(_os.path.dirname(_os.path.realpath(__file__)))
    _spec = _PathFinder.find_spec("kernels", [p for p in _sys.path if _os.path.realpath(p or _os.curdir) != _root])
    if _spec is None or _spec.loader is None:
        raise ModuleNotFoundError("No module named 'kernels' (this checkout's kernels/ folder is fastres.kernels)",
                                  name="kernels")
    _module = _util.module_from_spec(_spec)
    _sys.modules["kernels"] = _module  # what `import kernels` returns once this file has run
    try:
        _spec.loader.exec_module(_module)
    except BaseException:
        del _sys.modules["kernels"]
        raise
else:
    from ._checks import interpreting
    from .interpreter import skip_discarded_overflow_checks

    if interpreting():
        skip_discarded_overflow_checks()
    from .config import Config, config_space, select_config, tuning_candidates, use_config
    from .conv import conv_bn_relu, stem_conv
    from .pixels import pixel_norm
    from .conv_bordered import zero_bordered
    from .elementwise import add_relu
    from .fold import fold_bn
    from .gemm1x1 import conv1x1
    from .head import avgpool_fc
    from .launch import can_precompile, precompiling
    from .pool import max_pool2d
    from .splitk import COUNTER_WORDS

    __all__ = [
        "Config", "config_space", "select_config", "tuning_candidates", "use_config", "interpreting",
        "can_precompile", "precompiling",
        "COUNTER_WORDS", "conv_bn_relu", "zero_bordered", "stem_conv", "pixel_norm", "conv1x1", "add_relu", "max_pool2d", "avgpool_fc", "fold_bn",
    ]
