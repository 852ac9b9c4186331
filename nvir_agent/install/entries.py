"""Exact contents of every autostart entry, as pure functions of the command line.

Nothing here touches the file system, the registry or a clock: the OS adapters
(``linux``, ``windows``, ``macos``) write what these functions return, and the
tests check the same text on every OS.
"""

from __future__ import annotations

import plistlib
from collections.abc import Sequence
from html import escape as _html_escape
from importlib import resources
from pathlib import Path

from nvir_agent.install.command import (
    desktop_exec,
    systemd_exec,
    windows_arguments,
    windows_command_line,
)

TRAY = "tray"
HEADLESS = "headless"
MODES = (TRAY, HEADLESS)

APP_NAME = "NViR Agent"
DESKTOP_FILE = "nvir-agent.desktop"           # in $XDG_CONFIG_HOME/autostart
SYSTEMD_UNIT = "nvir-agent.service"           # in $XDG_CONFIG_HOME/systemd/user
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"   # under HKEY_CURRENT_USER
RUN_VALUE = "NViR Agent"
TASK_NAME = "NViR Agent (headless)"           # in the Task Scheduler root folder
LAUNCHD_LABELS = {TRAY: "org.nvir-agent.tray", HEADLESS: "org.nvir-agent.headless"}

def app_icon() -> Path:
    """The tray's "watching" icon, installed with the package (an absolute path)."""
    return Path(str(resources.files("nvir_agent").joinpath("assets", "icons",
                                                            "watching-64.png")))


def escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as XML entities (the Task Scheduler file's text nodes).

    ``html.escape`` without quotes does exactly that; ``xml.sax.saxutils`` would
    pull ``urllib.request`` into every command's start-up."""
    return _html_escape(text, quote=False)


def desktop_entry(argv: Sequence[str], icon: Path | None = None) -> str:
    """XDG autostart entry that starts the tray at login (Desktop Entry Specification)."""
    icon = app_icon() if icon is None else icon
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.0",
        f"Name={APP_NAME}",
        "GenericName=Spheroid viability monitor",
        "Comment=Watches the microscope folders and alerts when wells lose viability",
        f"Exec={desktop_exec(argv)}",
        f"Icon={icon}",
        "Terminal=false",
        "Categories=Science;Biology;",
        "StartupNotify=false",
        "X-GNOME-Autostart-enabled=true",
        "",
    ])


def systemd_unit(argv: Sequence[str]) -> str:
    """systemd user unit for headless mode: restarted on failure, output to the
    journal, CPU and disk access at a lowered priority."""
    return "\n".join([
        "[Unit]",
        f"Description={APP_NAME} (headless): bright-field spheroid viability monitoring",
        # a watched share not mounted yet at login stops `run` (config error): retry
        # every 30 s for about 10 minutes, then give up
        "StartLimitIntervalSec=900",
        "StartLimitBurst=20",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={systemd_exec(argv)}",
        "Restart=on-failure",
        "RestartSec=30",
        "TimeoutStopSec=60",
        "Environment=PYTHONUNBUFFERED=1",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=nvir-agent",
        "Nice=10",
        "CPUSchedulingPolicy=batch",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def windows_run_value(argv: Sequence[str]) -> str:
    """REG_SZ data of the ``NViR Agent`` value under HKCU\\...\\Run (the tray at logon)."""
    return windows_command_line(argv)


def windows_task_xml(argv: Sequence[str], user: str) -> str:
    """Task Scheduler 1.2 XML of the headless task: at ``user``'s logon, in that
    user's session without elevation, below-normal priority, no time limit.

    Write it UTF-16 encoded with CRLF line ends for ``schtasks /Create /XML``.
    """
    program, *args = argv
    user_x = escape(user)
    lines = [
        '<?xml version="1.0" encoding="UTF-16"?>',
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">',
        "  <RegistrationInfo>",
        f"    <Description>{APP_NAME} without the tray icon: watches the microscope folders "
        "and analyses every new image.</Description>",
        f"    <URI>\\{escape(TASK_NAME)}</URI>",
        "  </RegistrationInfo>",
        "  <Triggers>",
        "    <LogonTrigger>",
        "      <Enabled>true</Enabled>",
        f"      <UserId>{user_x}</UserId>",
        # network drives and shares come up a little after logon
        "      <Delay>PT30S</Delay>",
        "    </LogonTrigger>",
        "  </Triggers>",
        "  <Principals>",
        '    <Principal id="Author">',
        f"      <UserId>{user_x}</UserId>",
        "      <LogonType>InteractiveToken</LogonType>",
        "      <RunLevel>LeastPrivilege</RunLevel>",
        "    </Principal>",
        "  </Principals>",
        "  <Settings>",
        "    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>",
        "    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>",
        "    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>",
        "    <AllowHardTerminate>true</AllowHardTerminate>",
        "    <StartWhenAvailable>false</StartWhenAvailable>",
        "    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>",
        "    <IdleSettings>",
        "      <StopOnIdleEnd>false</StopOnIdleEnd>",
        "      <RestartOnIdle>false</RestartOnIdle>",
        "    </IdleSettings>",
        "    <AllowStartOnDemand>true</AllowStartOnDemand>",
        "    <Enabled>true</Enabled>",
        "    <Hidden>false</Hidden>",
        "    <RunOnlyIfIdle>false</RunOnlyIfIdle>",
        "    <WakeToRun>false</WakeToRun>",
        "    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>",
        "    <Priority>7</Priority>",
        "    <RestartOnFailure>",
        "      <Interval>PT1M</Interval>",
        "      <Count>10</Count>",
        "    </RestartOnFailure>",
        "  </Settings>",
        '  <Actions Context="Author">',
        "    <Exec>",
        f"      <Command>{escape(program)}</Command>",
        *([f"      <Arguments>{escape(windows_arguments(args))}</Arguments>"] if args else []),
        "    </Exec>",
        "  </Actions>",
        "</Task>",
        "",
    ]
    return "\n".join(lines)


def launchd_plist(argv: Sequence[str], headless: bool, log_dir: str) -> bytes:
    """LaunchAgent property list: the tray in the user's Aqua session, or headless
    mode in the background, restarted when it fails, at low CPU and disk priority."""
    mode = HEADLESS if headless else TRAY
    job: dict[str, object] = {
        "Label": LAUNCHD_LABELS[mode],
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "StandardOutPath": f"{log_dir}/launchd-{mode}.log",
        "StandardErrorPath": f"{log_dir}/launchd-{mode}.log",
        "ThrottleInterval": 30,
    }
    if headless:
        job.update({
            "KeepAlive": {"SuccessfulExit": False},
            "ProcessType": "Background",
            "Nice": 10,
            "LowPriorityIO": True,
        })
    else:
        job.update({
            "LimitLoadToSessionType": "Aqua",
            "ProcessType": "Interactive",
        })
    return plistlib.dumps(job, sort_keys=False)
