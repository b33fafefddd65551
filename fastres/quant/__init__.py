"""Post-training quantization to int8 and float8_e4m3fn (issue 32).

- ``calibrate``: the range (amax) of each activation tensor, from a histogram of |x| collected
  over the calibration batches, by the max, percentile, entropy (KL) or mse method
"""
