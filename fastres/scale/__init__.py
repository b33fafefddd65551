"""Past one GPU, on Ray (the optional `fastres[ray]` extra): offline batch inference on Ray
Data (`fastres predict --ray`), online serving with dynamic batching on Ray Serve
(`fastres serve`). Same preprocessing, labels and output schema as `fastres predict`.

Nothing here is imported by `import fastres`; ray is imported only by the modules that need it:

- ``cluster``: importing Ray (a clear error without the extra), connecting or starting a local
  cluster, what each actor or replica asks for (a GPU, or a CPU under the interpreter) and the
  environment it is given
- ``data``: ``Classifier``, the callable class for ``Dataset.map_batches``; ``classify`` and
  ``predict_files`` around it
- ``http``: the HTTP side of the server without Ray: routes, body limits, JSON errors
- ``oip``: the Open Inference Protocol (KServe v2, as Triton speaks it) without Ray or I/O: REST
  routes, metadata, inference requests parsed and answers encoded, over REST and gRPC
- ``batcher``: the replica's queue (batches that form while one runs, its bound, deadlines, drain)
- ``metrics``: Triton Inference Server's Prometheus metrics, counted per replica and summed
  over replicas, for ``GET /metrics``
- ``serve``: the Serve deployment (batched by ``batcher``, padded to captured batch sizes) and ``app``
- ``cli``: ``fastres serve``, and the ``--ray`` path of ``fastres predict``
"""
