"""`fastres.quantize`: post-training quantization of a ResNet to int8 or float8_e4m3fn.

Calibration runs the float model (float32, folded BatchNorm) with torch on whatever device the
calibration batches are on, the CPU included, and observes every activation
(`fastres.quant.calibrate`); each activation gets one symmetric per-tensor range, chosen by
`method`, and each conv's weights one symmetric scale per output channel (their absolute max).
A second pass measures each conv's own error: its 8-bit output against its float output from
the same float input. Convs named in `keep`, convs whose error exceeds `max_layer_error`, and
the convs that have no 8-bit kernel (a shortcut's average pool, timm's `d` variants) stay in
the float dtype. The classifier ("fc") is measured the same way, on the float forward's pooled
features: it runs in 8 bits only where its logits keep the float classifier's top-1 class on
at least CLASSIFIER_MIN_AGREEMENT of the calibration images (and it is not kept by name or by
`max_layer_error`). The result is a `fastres.ResNet` whose forward is fastres' kernels only, or
the model's wrapper (timm's, transformers', torchvision's segmentation and detection copies)
around one (`fastres.quant.intake`).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..device import DeviceInfo
from ..engine import ResNet
from ..precision import (CLASSIFIER, INPUT, POOLED, QMAX, QUANT_DTYPES, Precision, Quantized, Ranges, short,
                         value_names)
from ..progress import Progress
from ..schedule import Step, build_schedule
from .calibrate import RangeObserver, choose_amax, clipped_fraction
from .intake import intake
from .reference import classifier_step, conv_step, run_schedule
from .report import LayerReport, QuantizationReport

METHODS = ("max", "percentile", "entropy", "mse")
# The classifier runs in 8 bits where its logits keep the float classifier's top-1 class on at
# least this fraction of the calibration images (both from the same float features): at most one
# image in 200 may change its prediction because of the classifier alone.
CLASSIFIER_MIN_AGREEMENT = 0.995
_PLAN = DeviceInfo("plan", sms=1)  # the reference runs no kernel: any device's configs do


def quantize(model, calibration: Iterable, *, dtype: torch.dtype = torch.int8, method: str | None = None,
             keep: Sequence[str] = (), max_layer_error: float | None = None, percentile: float = 99.99,
             float_dtype: torch.dtype = torch.float16, device: torch.device | str | None = None,
             cuda_graph: bool = True, progress: bool = True) -> torch.nn.Module:
    """A quantized copy of `model`, called as the float one and answering in its input's dtype.

    model: a torchvision ResNet classifier (or an IntermediateLayerGetter over one), an FCN or
    DeepLabV3, a ResNet-FPN detector or BackboneWithFPN, a timm or transformers ResNet (or what
    fastres.from_timm / from_transformers made of one), or a float fastres.ResNet; the result
    is the same kind of model (a fastres.ResNet, or fastres' wrapper of the same class as
    from_torchvision / from_timm / from_transformers give). calibration: an iterable of input
    batches [N, 3, H, W] float as the model takes them (a DataLoader's (images, labels) pairs
    will do: the first element is used; a detector's are passed through its transform);
    iterated twice, or held in memory if it is a one-shot iterator. dtype: torch.int8 or
    torch.float8_e4m3fn. method: how an activation's range is chosen from what calibration saw:
    "max", "percentile" (`percentile` of |x|), "entropy" (TensorRT's KL divergence; int8 only),
    "mse"; default "entropy" for int8, "mse" for float8_e4m3fn (whose levels are not uniform:
    the KL divergence against them measured the histogram's noise, fastres.quant.calibrate).
    keep: conv names (e.g. "conv1", "layer4.2.conv3"), or "fc" (the classifier), to run in
    `float_dtype`; max_layer_error: keep every layer whose relative error against float exceeds
    it (None: keep none by error). The classifier runs in 8 bits only where its top-1 agreement
    with the float one on the calibration images is at least CLASSIFIER_MIN_AGREEMENT.
    device: where the engine runs (default: the model's). The report is
    `.quantization_report()`.
    """
    if dtype not in QUANT_DTYPES:
        raise TypeError(f"dtype must be torch.int8 or torch.float8_e4m3fn, got {dtype}")
    if method is None:
        method = "entropy" if dtype == torch.int8 else "mse"
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if max_layer_error is not None and not max_layer_error > 0:
        raise ValueError(f"max_layer_error must be positive, got {max_layer_error}")
    taken = intake(model)
    source, calibration = taken.engine, taken.batches(calibration)
    if device is None:
        device = taken.device
    convs = _conv_names(source)
    classifier = source.num_classes is not None
    unknown = sorted(set(keep) - set(convs) - ({CLASSIFIER} if classifier else set()))
    if unknown:
        also = " (and its classifier, 'fc')" if classifier else ""
        raise ValueError(f"keep names {unknown} that are not convs of {source.arch}{also}; its convs: "
                         f"{', '.join(convs)}")
    params = {k: v.detach().float().cpu() for k, v in source.params().items()}
    batches = calibration if iter(calibration) is not calibration else None
    held: list[torch.Tensor] = []
    observers: dict[str, RangeObserver] = {}
    pooled: list[torch.Tensor] = []  # the float forward's pooled features: the classifier is judged on them

    def record(name: str, t: torch.Tensor) -> None:
        if name not in observers:
            observers[name] = RangeObserver(name)
        observers[name].observe(t)
        if name == POOLED:
            pooled.append(t.cpu())

    count = images = 0
    with Progress(_length(calibration), desc=f"calibrating {source.arch}", unit="batch", enabled=progress) as bar:
        for x in _batches(calibration):
            if batches is None:
                held.append(x)
            run_schedule(_schedule(source, x, params), _on(params, x), x, record=record)
            count, images = count + 1, images + x.shape[0]
            bar.update()
    if count == 0:
        raise ValueError("calibration gave no batches")
    # The image's range is its max, whatever the method: pixels are bounded, with no outliers to
    # clip, and entropy's threshold on a bimodal image histogram (background and strokes)
    # clipped a quarter of the test set's pixels (tests/test_quantize.py).
    amax = {name: choose_amax(obs, "max" if name == INPUT else method, dtype=dtype, percentile=percentile)
            for name, obs in observers.items()}
    ranges = Ranges(dtype, amax)
    qparams = dict(params)
    weighted = [*convs, CLASSIFIER] if classifier else convs
    for name in weighted:
        qparams.update(_quantized_weight(name, params[f"{name}.weight"], dtype))
    errors = _layer_errors(source, params, qparams, ranges, dtype, batches if batches is not None else held, progress)
    why = {}
    for name in convs:
        if name in keep:
            why[name] = "kept by name"
        elif _has_avg_pool(source, name):
            why[name] = "average-pool shortcut: no 8-bit kernel"
        elif max_layer_error is not None and errors[name][0] > max_layer_error:
            why[name] = f"error above {max_layer_error:.2%}"
    if classifier:
        fc_error, fc_agreement = _classifier_error(pooled, params, qparams, ranges, dtype)
        if CLASSIFIER in keep:
            why[CLASSIFIER] = "kept by name"
        elif fc_agreement < CLASSIFIER_MIN_AGREEMENT:
            why[CLASSIFIER] = f"top-1 agreement {fc_agreement:.2%} < {CLASSIFIER_MIN_AGREEMENT:.1%}"
        elif max_layer_error is not None and fc_error > max_layer_error:
            why[CLASSIFIER] = f"error above {max_layer_error:.2%}"
    layers = [n for n in weighted if n not in why]
    final = {}
    for key, value in params.items():
        layer = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and layer in layers:
            continue
        final[key] = value if key.endswith(".bias") else value.to(float_dtype)
    for name in layers:
        final.update({k: qparams[k] for k in (f"{name}.weight", f"{name}.weight_scale")})
    engine = ResNet(source._arch, final, num_classes=source.num_classes, returns=source.returns, dilate=source.dilate,
                    dtype=float_dtype, device=device, cuda_graph=cuda_graph, quantized=Quantized(dtype, layers),
                    ranges=amax)
    runs = {name: short(float_dtype) if name in why else short(dtype) for name in weighted}
    rows = [LayerReport(name, src, name, ranges.scale(src), ranges.scale(name),
                        clipped_fraction(observers[src], amax[src]), clipped_fraction(observers[name], amax[name]),
                        _span(qparams[f"{name}.weight_scale"]), errors[name][0], runs[name], why.get(name, ""))
            for name, src in ((n, errors[n][1]) for n in convs)]
    if classifier:
        rows.append(LayerReport(CLASSIFIER, POOLED, "logits", ranges.scale(POOLED), None,
                                clipped_fraction(observers[POOLED], amax[POOLED]), None,
                                _span(qparams[f"{CLASSIFIER}.weight_scale"]), fc_error, runs[CLASSIFIER],
                                why.get(CLASSIFIER, ""), fc_agreement))
    engine.report = QuantizationReport(source.arch, dtype, method, count, images, max_layer_error, tuple(rows))
    return taken.model(engine)


def float_params(engine: ResNet) -> dict[str, torch.Tensor]:
    """A quantized engine's parameters as the float model it stands for (on the CPU, float32):
    each 8-bit layer's codes times their per-output-channel scales; the others as they are."""
    params = {k: v.cpu() for k, v in engine.params().items() if not k.endswith(".weight_scale")}
    for name in (engine.quantized.layers if engine.quantized is not None else ()):
        w = params[f"{name}.weight"].float()
        scale = engine.params()[f"{name}.weight_scale"].cpu()
        params[f"{name}.weight"] = w * scale.view(-1, *[1] * (w.dim() - 1))
    return params


def dequantized(engine: ResNet, dtype: torch.dtype, device, cuda_graph: bool = True) -> ResNet:
    """The float engine (weights in `dtype`, biases float32) a quantized `engine` stands for."""
    params = {k: (v.to(dtype) if k.endswith(".weight") else v.float()) for k, v in float_params(engine).items()}
    return ResNet(engine._arch, params, num_classes=engine.num_classes, returns=engine.returns, dilate=engine.dilate,
                  dtype=dtype, device=device, cuda_graph=cuda_graph)


def _conv_names(engine: ResNet) -> list[str]:
    from ..plan import arch_convs

    return [c.name for c in arch_convs(engine._arch, engine.dilate, engine.depth)]


def _has_avg_pool(engine: ResNet, name: str) -> bool:
    from ..plan import arch_convs

    return any(c.avg_pool for c in arch_convs(engine._arch, engine.dilate, engine.depth) if c.name == name)


def _length(calibration) -> int:
    try:
        return len(calibration)
    except TypeError:
        return 0


def _batches(calibration):
    for item in calibration:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"calibration batches must be float tensors [N, 3, H, W] (or tuples starting with one), got {got}")
        if not torch.isfinite(x).all():
            raise ValueError(f"a calibration batch of shape {tuple(x.shape)} holds NaN or Inf")
        if x.shape[0] > 0:
            yield x.detach()


def _schedule(engine: ResNet, x: torch.Tensor, params, quantized: Quantized | None = None):
    return build_schedule(engine._arch, tuple(x.shape), torch.float32, _PLAN, num_classes=engine.num_classes,
                          dilate=engine.dilate, returns=engine.returns, quantized=quantized)


def _on(params: dict, x: torch.Tensor) -> dict:
    """params on x's device (calibration runs where its batches are)."""
    return params if x.device.type == "cpu" else {k: v.to(x.device) for k, v in params.items()}


def _quantized_weight(name: str, w: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A conv's weights (or the classifier's, [classes, C]) in `dtype` with one symmetric scale
    per output channel (its absolute max maps to the dtype's largest code; an all-zero channel
    gets scale 1 and zero codes)."""
    w64 = w.double()
    amax = w64.abs().amax(dim=tuple(range(1, w.dim())))
    scale = torch.where(amax > 0, amax / QMAX[dtype], torch.ones_like(amax))
    v = w64 / scale.view(-1, *[1] * (w.dim() - 1))
    if dtype == torch.int8:
        q = torch.round(v).clamp_(-127, 127).to(torch.int8)
    else:
        q = v.clamp(-QMAX[dtype], QMAX[dtype]).float().to(dtype)
    layout = torch.channels_last if w.dim() == 4 else torch.contiguous_format
    return {f"{name}.weight": q.contiguous(memory_format=layout), f"{name}.weight_scale": scale.float()}


def _classifier_error(pooled: Sequence[torch.Tensor], params, qparams, ranges: Ranges,
                      dtype: torch.dtype) -> tuple[float, float]:
    """(relative L2 error of the 8-bit classifier's logits against the float32 classifier's,
    the fraction of images whose top-1 class they share), both from the same float32 pooled
    features (the float forward's, over the calibration batches)."""
    pr = Precision(dtype, torch.float32, None)
    diff = norm = 0.0
    agree = total = 0
    for feats in pooled:
        ref = classifier_step(None, feats, params, None)
        out = classifier_step(pr, feats, qparams, ranges)
        diff += float(((out.double() - ref.double()) ** 2).sum())
        norm += float((ref.double() ** 2).sum())
        agree += int((out.argmax(1) == ref.argmax(1)).sum())
        total += feats.shape[0]
    return _relative(diff, norm), agree / total


def _relative(diff: float, norm: float) -> float:
    """sqrt(diff / norm): a relative L2 error from its summed squares (0 / 0 is 0, x / 0 inf)."""
    return (diff / norm) ** 0.5 if norm > 0 else (0.0 if diff == 0 else float("inf"))


def _layer_errors(engine: ResNet, params, qparams, ranges: Ranges, dtype, batches, progress: bool) -> dict:
    """{conv: (relative L2 error of its dequantized 8-bit output against its float output, the
    scale name of its input)}, every conv computed in 8 bits from the float forward's input."""
    sums: dict[str, list] = {}  # conv -> [squared error, squared float output, input's scale name]
    inputs: dict[str, str] = {}  # conv -> its input's scale name (the same at every batch shape)

    def on_conv(step: Step, a, r, y):
        src = inputs[step.layer]
        pr = Precision(dtype, torch.float32, dtype, None if r is None else torch.float32, src, step.layer)
        q = conv_step(step, pr, a, r, qp, ranges, torch.float32, exact=False) * ranges.scale(step.layer)
        acc = sums.setdefault(step.layer, [0.0, 0.0, src])
        acc[0] += float(((q - y) ** 2).sum())
        acc[1] += float((y ** 2).sum())

    with Progress(_length(batches), desc="measuring each layer's error", unit="batch", enabled=progress) as bar:
        for x in _batches(batches):
            qp = _on(qparams, x)
            schedule = _schedule(engine, x, params)
            inputs.update(_input_names(schedule))
            run_schedule(schedule, _on(params, x), x, on_conv=on_conv)
            bar.update()
    return {k: (_relative(v[0], v[1]), v[2]) for k, v in sums.items()}


def _input_names(schedule) -> dict[str, str]:
    """conv layer -> the scale name of its input activation."""
    launches = [(s.kernel, s.layer) for s in schedule.steps]
    names = value_names(launches, schedule.wiring, len(schedule.values))
    return {s.layer: (INPUT if src is None else names[src]) for s, (src, _, _) in zip(schedule.steps, schedule.wiring)}


def _span(scale: torch.Tensor) -> tuple[float, float]:
    return float(scale.min()), float(scale.max())
