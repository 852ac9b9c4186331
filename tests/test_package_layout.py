"""The package's import contracts (pyproject.toml, [tool.importlinter]): layers
import only downward, Qt only in the GUI, no torch or OpenCV in the engine's
packages. A broken contract fails here with import-linter's report."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

import nvir_agent

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_import_contracts_are_kept(capsys):
    assert Path(nvir_agent.__file__).resolve().parents[1] == PYPROJECT.parent, (
        "the contracts must be checked against this checkout's nvir_agent")
    code = lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report
