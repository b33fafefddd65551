"""Where models come from: one module per source, each turning that source's modules into a
fastres engine plus whatever of the model stays in torch.

- `torchvision`: torchvision's ResNet / ResNeXt classifiers (any replace_stride_with_dilation)
  and their trunks as `IntermediateLayerGetter`s;
- `segmentation`: torchvision's FCN and DeepLabV3 with a ResNet backbone;
- `detection`: torchvision's ResNet-FPN detectors (Faster / Mask / Keypoint R-CNN, RetinaNet,
  FCOS) and `BackboneWithFPN`;
- `timm`: timm's ResNets and their features_only trunks (`fastres.from_timm`);
- `transformers`: transformers' ResNetForImageClassification, ResNetModel and ResNetBackbone
  (`fastres.from_transformers`);
- `checkpoints`, `hub`: what `fastres convert` reads of detection / segmentation checkpoints,
  and of timm's and transformers' (files, model folders, modules).

`fastres.from_torchvision` picks the source module by the model's class. Each source returns
a model called as the original is; file formats, loading and conversion live elsewhere
(`fastres.weights`).
"""
