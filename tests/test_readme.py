"""The README's two set-up commands are what CI runs, in a fresh virtualenv (its examples, and the
manual's, run in tests/test_docs.py)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_test_command_is_what_ci_runs():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    assert "python -m pip install -e . && fastres run" in commands
    test_cmd = 'python -m pip install -e ".[test]" && python -m pytest tests/ -q'
    assert test_cmd in commands
    # CI runs both, in that order, in a fresh virtualenv, as a new user would.
    lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    run_cmd = "python -m pip install -e . && fastres run"
    assert run_cmd in lines and test_cmd in lines and lines.index(run_cmd) < lines.index(test_cmd)
    venv = next(i for i, line in enumerate(lines) if "-m venv" in line)
    activate = next(i for i, line in enumerate(lines) if line.startswith(". ") and "bin/activate" in line)
    assert venv < activate < lines.index(run_cmd)


def test_ci_installs_the_second_triton_before_the_tests():
    """The gate's triton 3.6 rows need no network in CI: .ci/run installs that triton in its
    set-up and names it in $FASTRES_TRITON36_DIR before the tests run."""
    lines = [line.strip() for line in (README.parent / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    tests = next(i for i, line in enumerate(lines) if "pytest tests/" in line)
    install = next(i for i, line in enumerate(lines) if "--target" in line and "triton==3.6.0" in line)
    export = next(i for i, line in enumerate(lines) if line.startswith("export FASTRES_TRITON36_DIR="))
    assert install < export < tests
