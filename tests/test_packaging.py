"""fastres.kernels imports the same way from a wheel and from a plain checkout, and no top-level
`kernels` module is installed (an unrelated PyPI package owns that name); with the checkout's
root on sys.path the bare name `kernels` is still that package's (transformers imports it)."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Run in a child interpreter: import the kernels, report where they came from, and check
# add_relu on a tiny tensor against torch (float32: one rounding, so bitwise).
PROBE = r"""
import json, sys
{prelude}
import importlib.util
import torch
import fastres
from fastres import kernels as K
x = torch.randn(2, 5, 3, 3).contiguous(memory_format=torch.channels_last)
r = torch.randn(2, 5, 3, 3).contiguous(memory_format=torch.channels_last)
ok = torch.equal(K.add_relu(x, r), torch.relu(x + r))
print(json.dumps({{
    "fastres": fastres.__file__,
    "kernels": K.__file__,
    "same_object": K is fastres.kernels and sys.modules["fastres.kernels"] is K,
    "top_level_kernels": importlib.util.find_spec("kernels") is not None
        and str(importlib.util.find_spec("kernels").origin),
    "add_relu_ok": ok,
}}))
"""

# An editable install of fastres (as in a dev environment) adds an import hook that maps
# fastres.kernels to the checkout; a plain checkout must work without it, so drop it.
NO_EDITABLE_HOOK = (
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if 'editable' not in getattr(f, '__name__', type(f).__name__).lower()]"
)


def _child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["TRITON_INTERPRET"] = "1"          # the probe runs a kernel on CPU tensors
    env.update(extra)
    return env


def _probe(python: str, cwd: Path, env: dict, prelude: str = "") -> dict:
    proc = subprocess.run(
        [python, "-c", PROBE.format(prelude=prelude)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"probe failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _copy_source_tree(dst: Path) -> Path:
    """The files a build of this checkout sees: git's tracked and untracked-not-ignored files
    (so build/ and *.egg-info of the checkout stay untouched), else the tree minus caches."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        files = [f for f in out.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.SubprocessError):
        files = []
    if files:
        for f in files:
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    else:
        shutil.copytree(REPO, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", ".venv", ".hypothesis", ".pytest_cache", "weights"))
    return dst


def _reuse_packages_of_this_environment(py: Path) -> None:
    """Let the fresh venv at `py` import what the running interpreter has (torch, triton, pip;
    no network, nothing else to install). `--system-site-packages` would not do: it exposes
    the *base* interpreter's packages, not those of a virtualenv the tests run in. Paths in a
    .pth file are appended to sys.path after the venv's own site-packages (so the wheel's
    fastres comes first), and .pth files inside them are not run (so an editable install's
    import hook for this checkout stays out)."""
    here = [p for p in dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"],
                                      sysconfig.get_paths()["platlib"]]) if Path(p).is_dir()]
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "_test_environment.pth").write_text("".join(f"{p}\n" for p in here))


@pytest.mark.slow
def test_wheel_installs_fastres_kernels_only(tmp_path):
    src = _copy_source_tree(tmp_path / "src")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    wheels = list(dist.glob("fastres-*.whl"))
    assert len(wheels) == 1, wheels

    names = zipfile.ZipFile(wheels[0]).namelist()
    top = {n.split("/")[0] for n in names}
    assert not any(n.startswith("kernels/") for n in names), "the wheel installs a top-level kernels/"
    assert not any("/purelib/kernels/" in n or "/platlib/kernels/" in n for n in names), "top-level kernels/ via .data"
    assert {t for t in top if not t.endswith((".dist-info", ".data"))} == {"fastres"}, sorted(top)
    for mod in ("__init__", "_checks", "config", "conv", "gemm1x1", "elementwise", "pool", "head", "fold", "indexing"):
        assert f"fastres/kernels/{mod}.py" in names, f"fastres/kernels/{mod}.py missing from the wheel"
    for init in sorted((REPO / "fastres").rglob("__init__.py")):  # every subpackage, e.g. a new one
        rel = init.relative_to(REPO).as_posix()
        assert rel in names, f"{rel} missing from the wheel: add its package to pyproject.toml"
    zf = zipfile.ZipFile(wheels[0])
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    if top_level:
        assert zf.read(top_level[0]).decode().split() == ["fastres"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _reuse_packages_of_this_environment(py)
    inst = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheels[0])],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert inst.returncode == 0, f"pip install failed:\n{inst.stdout}\n{inst.stderr}"
    purelib = Path(subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()).resolve()

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    got = _probe(str(py), outside, _child_env())
    kernels_file = Path(got["kernels"]).resolve()
    assert kernels_file == purelib / "fastres" / "kernels" / "__init__.py", got
    assert Path(got["fastres"]).resolve().is_relative_to(purelib), got
    assert not kernels_file.is_relative_to(REPO), got
    assert got["same_object"], got
    assert got["add_relu_ok"], got
    top_kernels = got["top_level_kernels"]
    assert not top_kernels or not Path(top_kernels).resolve().is_relative_to(purelib), (
        f"a top-level kernels module came from the wheel: {top_kernels}")
    # The console script is installed too.
    script = venv / ("Scripts/fastres.exe" if os.name == "nt" else "bin/fastres")
    assert script.exists(), "the fastres console script is not installed"


def test_plain_checkout_imports_kernels(tmp_path):
    """`PYTHONPATH=<checkout> python -c 'from fastres import kernels'` uses the checkout's kernels/."""
    got = _probe(sys.executable, tmp_path, _child_env(PYTHONPATH=str(REPO)), prelude=NO_EDITABLE_HOOK)
    assert Path(got["kernels"]).resolve() == REPO / "kernels" / "__init__.py", got
    assert Path(got["fastres"]).resolve() == REPO / "fastres" / "__init__.py", got
    assert got["same_object"] and got["add_relu_ok"], got



def test_the_bare_name_kernels_is_never_the_checkout_folder(tmp_path):
    """From the checkout's root (`python -m ...` puts it first on sys.path) `import kernels` is
    the installed PyPI package where there is one, and ModuleNotFoundError where there is none
    (the other entries of sys.path holding a `kernels` hidden for that import); fastres.kernels
    is the checkout's folder in the same process either way."""
    import importlib.metadata

    code = """
import json, os, sys
root = os.path.realpath(os.getcwd())
def bare():
    sys.modules.pop("kernels", None)
    try:
        import kernels
        return kernels.__file__
    except ModuleNotFoundError as exc:
        return "missing: " + str(exc)
with_installed = bare()
saved = list(sys.path)
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) == root
               or not os.path.exists(os.path.join(p or os.curdir, "kernels"))]
without = bare()
sys.path[:] = saved
from fastres import kernels as K
print(json.dumps({"installed": with_installed, "without": without, "fastres": K.__file__,
                  "add_relu": hasattr(K, "add_relu")}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=_child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["fastres"]).resolve() == REPO / "kernels" / "__init__.py" and got["add_relu"], got
    assert got["without"].startswith("missing: No module named 'kernels'"), got
    try:
        installed = Path(importlib.metadata.distribution("kernels").locate_file("kernels/__init__.py")).resolve()
    except importlib.metadata.PackageNotFoundError:
        assert got["installed"].startswith("missing: "), got
    else:
        assert Path(got["installed"]).resolve() == installed, got
