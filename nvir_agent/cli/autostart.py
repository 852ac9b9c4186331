"""`nvir-agent autostart install|remove|status`: start the agent at login.

Tray mode by default (`run`); `--headless` starts `run --headless` as a
background service instead. One mode at a time: installing one removes the
other's entry. `remove` removes the entries only; data, config and logs stay.
"""

from __future__ import annotations

import argparse

from nvir_agent.install.autostart import Outcome, backend_for, install, remove, status
from nvir_agent.install.command import agent_command
from nvir_agent.install.entries import HEADLESS, TRAY

WORDS = {"created": "created", "updated": "updated", "unchanged": "unchanged",
         "removed": "removed", "absent": "not present"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "autostart", help="start the agent at login (install, remove, status)",
        description="Start the agent when you log in: the tray (default) or, with "
        "--headless, a background service. Linux: XDG autostart entry or systemd user "
        "unit; Windows: HKCU Run key or a scheduled task at logon; macOS: a LaunchAgent. "
        "Only the autostart entry is changed; data, config and logs stay.",
    )
    asub = p.add_subparsers(dest="autostart_command", metavar="ACTION", required=True)
    c = asub.add_parser("install", help="start the agent at login (replaces the other mode)")
    c.add_argument("--headless", action="store_true",
                   help="start `run --headless` as a background service instead of the tray")
    c.set_defaults(func=cmd_install)
    c = asub.add_parser("remove", help="no longer start the agent at login (both modes)")
    c.set_defaults(func=cmd_remove)
    c = asub.add_parser("status", help="which autostart entry is installed, and where")
    c.set_defaults(func=cmd_status)
    for action in dict.fromkeys(asub.choices.values()):
        action.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                            help="agent.toml for the started agent to use")
        action.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show full tracebacks and debug log lines")


def _print(outcome: Outcome) -> None:
    for change in outcome.changes:
        print(f"{WORDS[change.action]:<12} {change.mode:<9} {change.where}")
    for note in outcome.notes:
        print(note)


def cmd_install(args: argparse.Namespace) -> int:
    argv = agent_command(args.headless, config=args.config)
    outcome = install(backend_for(), argv, args.headless)
    _print(outcome)
    print(f"At login: {' '.join(argv)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _print(remove(backend_for()))
    print("Data, config and logs are kept (`nvir-agent paths` shows where).")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    backend = backend_for()
    argv_for = {TRAY: agent_command(False, config=args.config),
                HEADLESS: agent_command(True, config=args.config)}
    states = status(backend, argv_for)
    for st in states:
        state = ("installed" if st.up_to_date
                 else "installed, out of date (`autostart install` rewrites it)" if st.installed
                 else "not installed")
        print(f"{st.mode:<9} {state:<14} {st.where}")
    if not any(st.installed for st in states):
        print("The agent does not start at login (`nvir-agent autostart install`).")
    return 0
