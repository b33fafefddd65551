"""The names the harness shares: the benchmarked models, the systems compared, the dtypes by
name (the 8-bit ones among them), and the label every smoke figure carries."""
from __future__ import annotations

import torch

CLASSIFIER_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d")
# The ResNet-50 trunk of torchvision's FPN detectors (backbone.body: layer1..layer4 out) at the
# detection transform's size, batch 1 and 8 (fastres.benchmark.trunk).
TRUNK_MODEL = "detection-trunk"
E2E_MODELS = CLASSIFIER_MODELS + (TRUNK_MODEL,)
E2E_SYSTEMS = ("fastres", "cudnn-eager", "cudnn-eager-graph", "torch-compile")
MAX_AUTOTUNE_SYSTEM = "torch-compile-max-autotune"
ALL_E2E_SYSTEMS = E2E_SYSTEMS + (MAX_AUTOTUNE_SYSTEM,)
LAYER_SYSTEMS = ("fastres", "cudnn-eager", "cudnn-conv")

SMOKE_LABEL = "SMOKE: interpreter, not a performance figure"

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "int8": torch.int8,
          "float8_e4m3fn": torch.float8_e4m3fn}
# fastres' quantized kernels (docs/quantize.md): per layer the conv launch in 8 bits, end to end
# the engine fastres.quantize makes; cuDNN's rows of these stay float16 (fastres.benchmark.quantized).
EIGHT_BIT = ("int8", "float8_e4m3fn")
