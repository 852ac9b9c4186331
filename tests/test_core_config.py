"""agent.toml errors reach the user as one clear message and exit code 2, and
agent.toml.example documents every key."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nvir_agent.cli.main import main
from nvir_agent.config import SECTIONS, Config, load_config

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("text, command, expected", [
    ('[watch]\nsettle_s = "slow"\n', "status", r"watch\.settle_s must be a number, not 'slow'"),
    ("[watch]\nfolders = \"/data\"\n", "status", r"watch\.folders must be a list of texts"),
    ("[watch]\nsettle = 2\n", "status", r"unknown key 'settle' in \[watch\]"),
    ("[watcher]\nfolders = []\n", "status", r"unknown section \[watcher\]"),
    ("[model]\nbatch_size = 0\n", "status", r"model\.batch_size = 0 must be > 0"),
    ("[watch]\nobserver = \"inotify\"\n", "status", r"watch\.observer = 'inotify' is not allowed"),
    ("[watch]\nnaming = \"zeiss\"\n", "names", r"watch\.naming = 'zeiss' is not allowed"),
    ("[watch]\nregex = \"(?P<well>[A-P\"\n", "status", r"watch\.regex is not a valid regular"),
    ("[watch]\nregex = \"(?P<plate>\\\\w+)\"\n", "status", r"no named group 'well'"),
    ("[watch]\nfolders = [\"no/such/folder\"]\n", "run", r"watch\.folders lists 'no/such/folder'"),
    ("[watch\nfolders = []\n", "status", r"is not valid TOML"),
])
def test_config_error_names_file_key_and_fix_and_exits_2(
    tmp_path, capsys, text, command, expected
):
    cfg = write(tmp_path, text)
    args = [command, "x.tif"] if command == "names" else [command]
    rc, out, err = run_cli(capsys, "--config", str(cfg), *args)
    assert rc == 2
    assert re.search(expected, err), err
    assert str(cfg) in err
    assert "→" in err  # the hint line
    assert "Traceback" not in err and out == ""


def test_missing_config_file_exits_2_with_a_clear_message(tmp_path, capsys):
    rc, _out, err = run_cli(capsys, "--config", str(tmp_path / "nope.toml"), "status")
    assert rc == 2
    assert "nope.toml does not exist" in err and "Traceback" not in err


def test_missing_config_from_environment_variable_is_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NVIR_AGENT_CONFIG", str(tmp_path / "gone.toml"))
    rc, _out, err = run_cli(capsys, "status")
    assert rc == 2 and "$NVIR_AGENT_CONFIG" in err


def test_no_traceback_from_the_real_command_without_debug(tmp_path):
    cfg = write(tmp_path, "[watch]\nsettle_s = true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nvir_agent", "--config", str(cfg), "status"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "watch.settle_s must be a number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "acq").mkdir()
    cfg = write(tmp_path, '[watch]\nfolders = ["acq"]\n[storage]\ndatabase = "db/agent.sqlite3"\n')
    monkeypatch.chdir("/")
    c = load_config(cfg)
    assert c.resolve(c.watch.folders[0]) == tmp_path / "acq"
    assert c.resolve(c.storage.database) == tmp_path / "db" / "agent.sqlite3"


def test_defaults_apply_when_no_config_exists():
    assert load_config() == Config()


# --- agent.toml.example ------------------------------------------------------------------


def test_example_config_parses_and_equals_the_defaults():
    c = load_config(REPO / "agent.toml.example")
    assert dataclasses.replace(c, source=None) == Config()


def test_example_config_documents_exactly_the_known_keys():
    import tomllib

    raw = tomllib.loads((REPO / "agent.toml.example").read_text(encoding="utf-8"))
    assert set(raw) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert set(raw[name]) == {f.name for f in dataclasses.fields(cls)}, name


def test_every_example_key_has_an_explanation_above_it():
    lines = (REPO / "agent.toml.example").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\w+\s*=", line):
            assert lines[i - 1].startswith("#"), f"undocumented key: {line}"


def test_config_option_is_also_accepted_after_the_command_name(tmp_path, capsys):
    cfg = write(tmp_path, f'[storage]\ndatabase = "{tmp_path / "after.sqlite3"}"\n')
    rc, out, _ = run_cli(capsys, "status", "--config", str(cfg))
    assert rc == 0 and str(tmp_path / "after.sqlite3") in out
    rc, _, err = run_cli(capsys, "status", "--config", str(tmp_path / "missing.toml"))
    assert rc == 2 and "missing.toml does not exist" in err
