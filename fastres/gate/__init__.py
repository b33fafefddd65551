"""The compile gate, ``fastres check`` (DESIGN.md section 5, tier 2).

Every kernel in ``KERNELS`` x every config of ``config_space(kernel, dtype)`` x every dtype x
every specialization the engine launches ("variant": kernel size, stride, epilogue, input
precision) is compiled ahead of time for a GPU target (``DEFAULT_TARGET``: Hopper,
``GPUTarget("cuda", 90, 32)``) with ``triton.compile``; no GPU is needed. Each cubin is read
with triton's bundled ``cuobjdump``, and a row fails on a compile error, a register spill,
shared memory over the target's limit, or a GEMM-type kernel without the target's tensor-core
instruction (HGMMA on sm_90) where one exists for its operands.

One job per module; import what you need from the module that owns it:

- ``target``: the compile target and its limits (``Target``, ``SM90``, ``DEFAULT_TARGET``);
- ``variants``: the launches each kernel is compiled for, which rows need the tensor cores,
  which configs the engine can dispatch;
- ``compile``: a kernel's @triton.jit function, its specialization by the JIT's rules, and
  compiling and judging one row;
- ``inspect``: cuobjdump's resource usage and SASS opcode counts;
- ``cache``: the results cache and its keys;
- ``run``: the rows to compile, ``gate_rows`` (all of them, in a process pool) and
  ``check_one``;
- ``report``: the table, the failing-config summary, the summary line;
- ``cli``: the ``fastres check`` subcommand (``python -m fastres.gate`` runs it too).

Nothing here imports ``fastres.kernels`` at import time: triton picks its interpreter when the
kernels are defined, and the gate must be able to refuse TRITON_INTERPRET first.
"""
