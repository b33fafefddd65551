"""Classifying images: files or uint8 tensors in, labels out, preprocessed exactly as
torchvision's weights preprocess them (`fastres.Predictor`, `fastres predict`).

One job per module; import a name from the module that owns it:

- ``images``: finding image files, decoding them as torchvision does, the resize and crop
  (``Transform``), and every way a file can fail (``ImageError``)
- ``preprocess``: ``fastres.preprocess``, a file's bytes to the engine's crop, exact
  (torchvision's pixels) or fast (scaled JPEG decode, uint8 resize), and the memory bound
- ``labels``: class names (a labels file, ImageNet's, or the index)
- ``pipeline``: the worker pool, fixed-shape batches, pinned buffers, streams, nvjpeg, stage times
- ``predictor``: ``Predictor``, the Python API
- ``output``: ``Prediction`` and the JSON-lines and CSV writers
- ``cli``: the ``fastres predict`` command
- ``options``: the options ``fastres predict`` and ``fastres serve`` share (``--preprocess``, the dtypes)
"""
