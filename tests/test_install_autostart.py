"""`nvir-agent autostart` for real in a temporary HOME on Linux (files checked with
desktop-file-validate and systemd-analyze), and the Windows and macOS adapters
through stand-ins for the registry, schtasks and launchctl."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nvir_agent.cli.main import main
from nvir_agent.install import autostart
from nvir_agent.install.entries import HEADLESS, TASK_NAME, TRAY, windows_task_xml
from nvir_agent.install.linux import LinuxAutostart
from nvir_agent.install.macos import MacAutostart
from nvir_agent.install.windows import WindowsAutostart

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux adapter")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: installer/setup.sh --test installs it as root")
        pytest.skip(f"{name} not installed (Debian: desktop-file-utils / systemd; "
                    "installer/setup.sh --test installs both as root)")
    return path


@pytest.fixture
def lab_home(isolated_user_dirs, monkeypatch, tmp_path):
    """A temporary HOME whose agent lives in a folder with a space in its name."""
    home = isolated_user_dirs
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # no user bus in it: no systemctl
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    scripts = tmp_path / "My Lab" / "venv" / "bin"
    scripts.mkdir(parents=True)
    script = scripts / "nvir-agent"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    monkeypatch.setattr("sysconfig.get_path", lambda name, *a, **k: str(scripts))
    return home, script


def _cli(capsys, *args: str) -> str:
    assert main(["autostart", *args]) == 0
    return capsys.readouterr().out


@linux_only
def test_autostart_round_trip_in_a_temporary_home(lab_home, capsys):
    home, script = lab_home
    config = home / "config"
    desktop = config / "autostart" / "nvir-agent.desktop"
    unit = config / "systemd" / "user" / "nvir-agent.service"
    link = config / "systemd" / "user" / "default.target.wants" / "nvir-agent.service"

    out = _cli(capsys, "install")
    assert f"created      tray      {desktop}" in out
    assert f'Exec="{script}" run' in desktop.read_text().splitlines()
    subprocess.run([_tool("desktop-file-validate"), str(desktop)], check=True)
    assert "unchanged    tray" in _cli(capsys, "install")

    out = _cli(capsys, "install", "--headless")
    assert f"removed      tray      {desktop}" in out
    assert f"created      headless  {unit}" in out
    assert not desktop.exists()
    assert f'ExecStart="{script}" run --headless' in unit.read_text().splitlines()
    assert link.is_symlink() and link.resolve() == unit.resolve()
    verify = subprocess.run([_tool("systemd-analyze"), "verify", "--user", str(unit)],
                            capture_output=True, text=True)
    # verify exits 0 on unknown keys and bad values too; they show on stderr
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    assert "unchanged    headless" in _cli(capsys, "install", "--headless")

    status = _cli(capsys, "status")
    assert f"headless  installed      {unit}" in status
    assert f"tray      not installed  {desktop}" in status

    data = home / "data" / "nvir-agent"
    data.mkdir(parents=True)
    (data / "nvir-agent.sqlite3").write_bytes(b"kept")
    out = _cli(capsys, "remove")
    assert f"removed      headless  {unit}" in out
    assert "not present  tray" in out
    assert not unit.exists() and not link.is_symlink()
    assert (data / "nvir-agent.sqlite3").read_bytes() == b"kept"
    assert "not present  headless" in _cli(capsys, "remove")
    assert "does not start at login" in _cli(capsys, "status")


@linux_only
def test_systemd_analyze_rejects_a_unit_whose_program_is_missing(lab_home, tmp_path):
    unit = tmp_path / "nvir-agent.service"
    unit.write_text(autostart.backend_for("linux").wanted(HEADLESS, [str(tmp_path / "gone"),
                                                                      "run", "--headless"]))
    verify = subprocess.run([_tool("systemd-analyze"), "verify", "--user", str(unit)],
                            capture_output=True, text=True)
    assert verify.returncode != 0 and "is not executable" in verify.stderr


def test_linux_status_flags_an_entry_that_starts_another_program(tmp_path):
    backend = LinuxAutostart(tmp_path, systemctl=lambda args: False)
    autostart.install(backend, ["/old/venv/bin/nvir-agent", "run"], headless=False)
    states = autostart.status(backend, {TRAY: ["/new/bin/nvir-agent", "run"],
                                        HEADLESS: ["/new/bin/nvir-agent", "run", "--headless"]})
    assert [(s.mode, s.installed, s.up_to_date) for s in states] == [
        (TRAY, True, False), (HEADLESS, False, False)]
    outcome = autostart.install(backend, ["/new/bin/nvir-agent", "run"], headless=False)
    assert [c.action for c in outcome.changes] == ["updated"]


def test_linux_headless_unit_without_its_enable_link_is_enabled_again(tmp_path):
    calls = []
    backend = LinuxAutostart(tmp_path, systemctl=lambda args: calls.append(list(args)) or True)
    argv = ["/opt/nvir/nvir-agent", "run", "--headless"]
    autostart.install(backend, argv, headless=True)
    backend.wants_link.unlink()
    assert [c.action for c in autostart.install(backend, argv, headless=True).changes] == [
        "updated"]
    assert backend.wants_link.is_symlink()
    autostart.remove(backend)
    assert calls == [["daemon-reload"], ["daemon-reload"], ["stop", "nvir-agent.service"],
                     ["daemon-reload"]]


class FakeRegistry:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name):
        return self.values.get(name)

    def set(self, name, value):
        self.values[name] = value

    def delete(self, name):
        self.values.pop(name, None)


class FakeSchtasks:
    """Keeps the XML given to /Create, answers /Query with it, as schtasks would."""

    def __init__(self) -> None:
        self.tasks: dict[str, str] = {}
        self.calls: list[list[str]] = []

    def __call__(self, args):
        args = list(args)
        self.calls.append(args)
        verb, name = args[0], args[2]
        found = name in self.tasks
        out = ""
        if verb == "/Create":
            self.tasks[name] = Path(args[4]).read_text(encoding="utf-16")
            found = True
        elif verb == "/Query" and found:
            out = self.tasks[name]
        elif verb == "/Delete" and found:
            del self.tasks[name]
        return subprocess.CompletedProcess(args, 0 if found else 1, out, "")


WIN_EXE = r"C:\Users\Lab User\AppData\Local\Programs\NViR Agent\nvir-agentw.exe"


def test_windows_tray_is_a_run_key_value_and_headless_a_logon_task():
    registry, schtasks = FakeRegistry(), FakeSchtasks()
    backend = WindowsAutostart(registry, schtasks, user="LAB-PC\\lab")

    outcome = autostart.install(backend, [WIN_EXE, "run"], headless=False)
    assert [(c.action, c.mode) for c in outcome.changes] == [("created", TRAY)]
    assert outcome.changes[0].where == \
        r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\NViR Agent"
    assert registry.values == {"NViR Agent": f'"{WIN_EXE}" run'}
    assert autostart.install(backend, [WIN_EXE, "run"], False).changes[0].action == "unchanged"

    outcome = autostart.install(backend, [WIN_EXE, "run", "--headless"], headless=True)
    assert [(c.action, c.mode) for c in outcome.changes] == [("removed", TRAY),
                                                              ("created", HEADLESS)]
    assert registry.values == {}
    assert schtasks.tasks[TASK_NAME] == windows_task_xml([WIN_EXE, "run", "--headless"],
                                                         "LAB-PC\\lab")
    create = next(c for c in schtasks.calls if c[0] == "/Create")
    assert create[:3] == ["/Create", "/TN", TASK_NAME] and create[-1] == "/F"
    again = autostart.install(backend, [WIN_EXE, "run", "--headless"], headless=True)
    assert [c.action for c in again.changes] == ["unchanged"]

    outcome = autostart.remove(backend)
    assert [(c.action, c.mode) for c in outcome.changes] == [("absent", TRAY),
                                                              ("removed", HEADLESS)]
    assert schtasks.tasks == {}
    assert ["/End", "/TN", TASK_NAME] in schtasks.calls


def test_macos_launch_agents_round_trip_in_a_temporary_home(tmp_path):
    calls = []
    backend = MacAutostart(tmp_path, launchctl=lambda args: calls.append(list(args)) or True)
    argv = ["/Applications/NViR Agent/nvir-agent", "run", "--headless"]
    outcome = autostart.install(backend, argv, headless=True)
    plist = tmp_path / "Library" / "LaunchAgents" / "org.nvir-agent.headless.plist"
    assert [(c.action, c.where) for c in outcome.changes] == [("created", str(plist))]
    job = plistlib.loads(plist.read_bytes())
    assert job["ProgramArguments"] == argv and job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["StandardOutPath"].startswith(str(tmp_path / "Library" / "Logs" / "nvir-agent"))
    assert autostart.install(backend, argv, headless=True).changes[0].action == "unchanged"

    outcome = autostart.install(backend, argv[:2], headless=False)
    assert [c.action for c in outcome.changes] == ["removed", "created"]
    assert calls == [["bootout", f"gui/{os.getuid()}/org.nvir-agent.headless"]]
    assert sorted(p.name for p in plist.parent.iterdir()) == ["org.nvir-agent.tray.plist"]
    autostart.remove(backend)
    assert list(plist.parent.iterdir()) == []


def test_autostart_modules_import_neither_qt_nor_torch():
    code = ("import sys, nvir_agent.cli.autostart, nvir_agent.install.linux, "
            "nvir_agent.install.windows, nvir_agent.install.macos; "
            "print(sorted(m for m in ('torch', 'PySide6', 'cv2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.strip() == "[]"
