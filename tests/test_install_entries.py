"""Exact contents of the autostart entries and the quoting of their command lines,
checked on every OS (no file, registry or task is written here)."""

from __future__ import annotations

import plistlib
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nvir_agent.errors import DataError
from nvir_agent.install.command import (
    agent_command,
    desktop_exec,
    systemd_exec,
    windows_command_line,
)
from nvir_agent.install.entries import (
    desktop_entry,
    launchd_plist,
    systemd_unit,
    windows_run_value,
    windows_task_xml,
)
from nvir_agent.install.windows import TASK_NS, task_command

WIN_EXE = r"C:\Users\Lab User\AppData\Local\Programs\NViR Agent\nvir-agentw.exe"


def test_command_of_a_frozen_build_is_the_executable_itself(tmp_path):
    exe = tmp_path / "dist" / "nvir-agent"
    argv = agent_command(True, platform="linux", frozen=True, executable=str(exe))
    assert argv == [str(exe), "run", "--headless"]


def test_command_of_a_frozen_windows_build_prefers_the_windowless_twin(tmp_path):
    (tmp_path / "nvir-agent.exe").touch()
    (tmp_path / "nvir-agentw.exe").touch()
    argv = agent_command(False, platform="win32", frozen=True,
                         executable=str(tmp_path / "nvir-agent.exe"))
    assert argv == [str(tmp_path / "nvir-agentw.exe"), "run"]


def test_command_of_a_pip_install_is_the_console_script_beside_python(tmp_path):
    scripts = tmp_path / "venv" / "bin"
    scripts.mkdir(parents=True)
    (scripts / "nvir-agent").touch()
    argv = agent_command(False, platform="linux", frozen=False,
                         executable=str(scripts / "python"), scripts_dir=str(scripts))
    assert argv == [str(scripts / "nvir-agent"), "run"]


def test_command_on_windows_pip_install_uses_pythonw_so_no_console_opens(tmp_path):
    (tmp_path / "pythonw.exe").touch()
    argv = agent_command(True, platform="win32", frozen=False,
                         executable=str(tmp_path / "python.exe"), scripts_dir=str(tmp_path))
    assert argv == [str(tmp_path / "pythonw.exe"), "-m", "nvir_agent", "run", "--headless"]


def test_command_passes_the_config_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = agent_command(False, config="lab.toml", platform="linux", frozen=True,
                         executable="/opt/nvir-agent/nvir-agent")
    assert argv[-2:] == ["--config", str(tmp_path / "lab.toml")]


def test_desktop_exec_quotes_reserved_characters_and_doubles_backslashes():
    argv = ["/opt/My Lab/nvir-agent", "run", "--config", '/data/50% "a" $X\\b.toml']
    assert desktop_exec(argv) == (
        '"/opt/My Lab/nvir-agent" run --config "/data/50%% \\\\"a\\\\" \\\\$X\\\\\\\\b.toml"')
    assert desktop_exec(["/usr/bin/nvir-agent", "run"]) == "/usr/bin/nvir-agent run"


def test_systemd_exec_quotes_spaces_and_escapes_specifiers_and_variables():
    argv = ["/opt/My Lab/nvir-agent", "run", "--headless", "--config", '/d/50% $HOME "q".toml']
    assert systemd_exec(argv) == (
        '"/opt/My Lab/nvir-agent" run --headless --config "/d/50%% $$HOME \\"q\\".toml"')
    # plain arguments stay as they are, and shell-style splitting gives them back
    plain = ["/home/lab/.venv/bin/nvir-agent", "run", "--headless"]
    assert shlex.split(systemd_exec(plain)) == plain


def test_windows_command_line_quotes_the_program_and_arguments_with_spaces():
    line = windows_command_line([WIN_EXE, "run", "--config", r"\\server\share\Lab Plates\a.toml"])
    assert line == f'"{WIN_EXE}" run --config "\\\\server\\share\\Lab Plates\\a.toml"'
    assert windows_command_line([r"C:\nvir\nvir-agentw.exe", "run"]) == r'"C:\nvir\nvir-agentw.exe" run'


def test_control_characters_in_the_command_are_refused():
    with pytest.raises(DataError):
        desktop_exec(["/opt/a\nb/nvir-agent", "run"])


def test_desktop_entry_holds_the_exec_line_and_starts_without_a_terminal():
    text = desktop_entry(["/opt/My Lab/nvir-agent", "run"])
    lines = text.splitlines()
    assert lines[0] == "[Desktop Entry]"
    assert 'Exec="/opt/My Lab/nvir-agent" run' in lines
    assert "Type=Application" in lines and "Terminal=false" in lines
    assert text.endswith("\n")
    (icon,) = [line.removeprefix("Icon=") for line in lines if line.startswith("Icon=")]
    assert Path(icon).is_absolute() and Path(icon).is_file()  # the installed tray icon


def test_systemd_unit_restarts_on_failure_logs_to_journald_at_low_priority():
    text = systemd_unit(["/home/lab/.venv/bin/nvir-agent", "run", "--headless"])
    lines = text.splitlines()
    for expected in ("ExecStart=/home/lab/.venv/bin/nvir-agent run --headless",
                     "Restart=on-failure", "RestartSec=30",
                     "StandardOutput=journal", "StandardError=journal", "Nice=10",
                     "IOSchedulingClass=best-effort", "IOSchedulingPriority=7",
                     "WantedBy=default.target"):
        assert expected in lines


def test_windows_run_value_is_the_quoted_windowless_command():
    assert windows_run_value([WIN_EXE, "run"]) == f'"{WIN_EXE}" run'


def test_windows_task_xml_runs_at_logon_as_the_user_without_elevation():
    xml_text = windows_task_xml([WIN_EXE, "run", "--headless"], "LAB-PC\\Lab User")
    assert xml_text.startswith('<?xml version="1.0" encoding="UTF-16"?>')
    # as schtasks reads it: UTF-16 with a byte order mark
    root = ET.fromstring(xml_text.encode("utf-16"))
    assert root.tag == f"{{{TASK_NS['t']}}}Task"
    assert root.get("version") == "1.2"

    def f(path: str) -> str | None:
        return root.findtext(path, namespaces=TASK_NS)

    assert f("t:Triggers/t:LogonTrigger/t:UserId") == "LAB-PC\\Lab User"
    assert f("t:Triggers/t:LogonTrigger/t:Enabled") == "true"
    assert f("t:Principals/t:Principal/t:UserId") == "LAB-PC\\Lab User"
    assert f("t:Principals/t:Principal/t:LogonType") == "InteractiveToken"
    assert f("t:Principals/t:Principal/t:RunLevel") == "LeastPrivilege"
    assert f("t:Settings/t:ExecutionTimeLimit") == "PT0S"
    assert f("t:Settings/t:MultipleInstancesPolicy") == "IgnoreNew"
    assert f("t:Settings/t:DisallowStartIfOnBatteries") == "false"
    assert f("t:Settings/t:Priority") == "7"
    assert f("t:Actions/t:Exec/t:Command") == WIN_EXE
    assert f("t:Actions/t:Exec/t:Arguments") == "run --headless"
    assert task_command(xml_text) == windows_command_line([WIN_EXE, "run", "--headless"])


def test_windows_task_xml_escapes_markup_in_paths_and_user_names():
    xml_text = windows_task_xml([r"C:\R&D <lab>\nvir-agentw.exe", "run", "--headless"], "R&D\\x")
    root = ET.fromstring(xml_text.encode("utf-16"))
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=TASK_NS) == \
        r"C:\R&D <lab>\nvir-agentw.exe"
    assert root.findtext("t:Principals/t:Principal/t:UserId", namespaces=TASK_NS) == "R&D\\x"


def test_launchd_plist_for_the_tray_runs_at_load_in_the_aqua_session():
    job = plistlib.loads(launchd_plist(["/Applications/NViR Agent/nvir-agent", "run"], False,
                                       "/Users/lab/Library/Logs/nvir-agent"))
    assert job["Label"] == "org.nvir-agent.tray"
    assert job["ProgramArguments"] == ["/Applications/NViR Agent/nvir-agent", "run"]
    assert job["RunAtLoad"] is True
    assert job["LimitLoadToSessionType"] == "Aqua"
    assert "KeepAlive" not in job
    assert job["StandardErrorPath"] == "/Users/lab/Library/Logs/nvir-agent/launchd-tray.log"


def test_launchd_plist_for_headless_mode_restarts_on_failure_at_low_priority():
    job = plistlib.loads(launchd_plist(["/usr/local/bin/nvir-agent", "run", "--headless"], True,
                                       "/Users/lab/Library/Logs/nvir-agent"))
    assert job["Label"] == "org.nvir-agent.headless"
    assert job["ProgramArguments"][-1] == "--headless"
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ProcessType"] == "Background"
    assert job["Nice"] == 10 and job["LowPriorityIO"] is True

