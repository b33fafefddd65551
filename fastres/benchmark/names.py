"""The names the harness shares: the benchmarked models, the systems compared, the dtypes by
name, and the label every smoke figure carries."""
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

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
