"""The package's import contracts (pyproject.toml, [tool.importlinter]): layers
import only downward, Qt only in the GUI, no torch or OpenCV in the engine's
packages. A broken contract fails here with import-linter's report.

import-linter runs in its own process: it configures logging globally, which
would silence the loggers of the tests that run after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nvir_agent

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def test_import_contracts_are_kept():
    assert Path(nvir_agent.__file__).resolve().parents[1] == ROOT, (
        "the contracts must be checked against this checkout's nvir_agent")
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(PYPROJECT)!r}, no_cache=True, "
            "no_logo=True))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" in out.stdout and " 0 broken" in out.stdout, out.stdout
