"""The benchmark harness behind ``fastres bench`` and the scripts in ``bench/`` (DESIGN.md
section 6): fastres against cuDNN, end to end (whole networks) and per layer (every distinct
convolution, and the classifier head), every system checked before it is timed.

One job per module; import a name from the module that owns it:

- ``cli``: the ``fastres bench`` command (options, defaults, the order of a run, ``--smoke``)
- ``e2e``: the end-to-end measurement
- ``layers``: the per-layer measurement (and the matrix and copy peaks it is compared to)
- ``layer_calls``: one conv layer as something to run: its input sets and scratch, fastres'
  config, fn(i) per compared system, the reference (``layers`` and ``variants`` both time it)
- ``head``: the classifier head measurement
- ``pipeline``: the image pipeline of ``fastres predict`` (``fastres bench predict``)
- ``preprocess``: decode + resize + crop per CPU core, exact / fast / torchvision / PIL, and
  nvjpeg on a GPU (``fastres bench preprocess``)
- ``systems``: building the compared systems and the flags they run under
- ``timing``: statistics, the timed loop, input rotation and L2 flush, the time budget
- ``numerics``: relative error and tolerances
- ``geometry``: the convolutions and head of a torchvision ResNet
- ``results``: the results schema, records and file
- ``report``: markdown, summary text and plot of a results file
- ``environment``: the device, software versions and commit a run is made on
- ``run``: one invocation's state and the bookkeeping its loops share
- ``names``: the models, systems, dtypes and smoke label the modules share
"""
