"""Post-training quantization to int8 and float8_e4m3fn. `fastres.quantize` is
`fastres.quant.quantize.quantize`.

- ``calibrate``: the range (amax) of each activation tensor, from a histogram of |x| collected
  over the calibration batches, by the max, percentile, entropy (KL) or mse method
- ``reference``: a schedule run by torch: the float forward calibration observes, and the
  reference of a quantized engine's integer math
- ``quantize``: calibration, weight quantization, each layer's error, the kept layers, the engine
- ``intake``: the float engine a model (torchvision's, timm's, transformers', a detector...)
  is calibrated by, and the same kind of model rebuilt around the quantized one
- ``report``: the per-layer report; ``fileformat``: quantized files (format version 3);
  ``images``: calibration batches from a folder of images
"""
