"""The compile gate, ``fastres check`` (DESIGN.md section 5, tier 2).

Every kernel in ``KERNELS`` x every config the engine can dispatch on a target x every dtype
x every specialization the engine launches ("variant": kernel size, stride, epilogue, input
precision) is compiled ahead of time for GPU targets with ``triton.compile``; no GPU is
needed. The targets (``TARGETS``): every NVIDIA GPU since Ampere (sm_80, sm_86, sm_89, sm_90,
sm_100, sm_120) and AMD's MI300X (gfx942); ``DEFAULT_TARGET``, Hopper
(``GPUTarget("cuda", 90, 32)``), gets every variant, the others each config at its heaviest
variants. A cubin is read with triton's bundled ``cuobjdump``, an AMD kernel from its amdgcn
listing, and a row fails on a compile error, a register spill, shared memory over the
target's limit, or a GEMM-type kernel without the target's tensor-core instruction (HMMA,
HGMMA, UTCHMMA, v_mfma) where one exists for its operands.

One job per module; import what you need from the module that owns it:

- ``target``: the compile targets and their limits (``Target``, ``TARGETS``,
  ``DEFAULT_TARGET``, ``resolve_targets``);
- ``variants``: the launches each kernel is compiled for;
- ``selection``: which configs the engine can dispatch on a target, which variants are the
  heaviest, which rows need the tensor cores;
- ``compile``: a kernel's @triton.jit function, its specialization by the JIT's rules, and
  compiling and judging one row;
- ``inspect``: cuobjdump's resource usage and SASS opcode counts; an amdgcn listing's
  registers, scratch and MFMA count;
- ``keys``: the JIT's compile keys of recorded launches (``recording``, ``compile_keys``): which
  binaries a forward needs, so that a new input size can be shown to need none;
- ``cache``: the results cache and its keys;
- ``run``: the rows to compile, ``gate_rows`` (all of them, in a process pool) and
  ``check_one``;
- ``report``: the table, the failing-config summary, the summary line;
- ``cli``: the ``fastres check`` subcommand (``python -m fastres.gate`` runs it too).

Nothing here imports ``fastres.kernels`` at import time: triton picks its interpreter when the
kernels are defined, and the gate must be able to refuse TRITON_INTERPRET first.
"""
