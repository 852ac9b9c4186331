"""Monitoring commands: platemap check, alerts, ack, dismiss, resolve.

`alerts` reads through a read-only connection; ack/dismiss/resolve write
through a short-lived connection to the same WAL database, so they never hold
up a running agent for more than a moment.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nvir_agent.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("platemap", help="check a plate map file and print its layout")
    psub = p.add_subparsers(dest="platemap_command", metavar="ACTION", required=True)
    c = psub.add_parser("check", help="validate a CSV or TOML plate map and print the layout")
    c.add_argument("file", metavar="FILE", help="plate map (.csv or .toml)")
    c.add_argument("--format", type=int, choices=(96, 384, 1536),
                   help="plate format (default: plates.format in agent.toml)")
    c.set_defaults(func=cmd_platemap_check)

    p = sub.add_parser("alerts", help="list open alerts (--all: also closed ones)")
    p.add_argument("--all", action="store_true", help="include resolved and dismissed alerts")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--plate", metavar="PLATE", help="only this plate")
    p.add_argument("--station", metavar="NAME",
                   help="only plates imaged by this station (several microscopes on one store)")
    p.set_defaults(func=cmd_alerts)

    for name, verb in (("ack", "acknowledge an alert (you are looking into it)"),
                       ("dismiss", "dismiss an alert as an artifact"),
                       ("resolve", "close an alert by hand (dealt with)")):
        p = sub.add_parser(name, help=verb)
        p.add_argument("id", type=int, metavar="ID", help="alert ID (see `nvir-agent alerts`)")
        p.add_argument("--comment", metavar="TEXT", help="a note kept with the alert")
        p.set_defaults(func=cmd_alert_action, action=name)


# --- platemap -----------------------------------------------------------------------------


def cmd_platemap_check(args: argparse.Namespace) -> int:
    from nvir_agent.monitor.platemap import read_plate_maps, render_layout

    plate_format = args.format
    if plate_format is None:
        plate_format = load_config(args.config, check_folders=False).plates.format
    maps = read_plate_maps(Path(args.file), plate_format)
    for i, pm in enumerate(maps):
        if i:
            print()
        print(render_layout(pm))
    print(f"\n{args.file}: OK ({len(maps)} plate{'s' if len(maps) != 1 else ''})")
    return 0


# --- alerts -------------------------------------------------------------------------------


def _database(args: argparse.Namespace) -> str:
    """The store named by the config: a SQLite file or a server URL."""
    from nvir_agent.store import database_url

    return database_url(load_config(args.config, check_folders=False))


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def cmd_alerts(args: argparse.Namespace) -> int:
    from nvir_agent.monitor.alerts import alert_events
    from nvir_agent.monitor.listener import describe_subject
    from nvir_agent.store import StoreReader, redact, store_exists

    db = _database(args)
    if not store_exists(db):
        if args.json:
            print("[]")
        else:
            print(f"No alerts: there is no database at {redact(db)} yet.")
        return 0
    with StoreReader(db) as reader:
        alerts = reader.alerts(include_closed=args.all, plate=args.plate,
                               station=args.station)
        events = {a.id: alert_events(reader, a.id) for a in alerts}
    if args.json:
        out = []
        for a in alerts:
            d = a.as_dict()
            d["events"] = [{"at": e.at, "action": e.action, "user": e.user, "comment": e.comment}
                           for e in events[a.id]]
            out.append(d)
        print(json.dumps(out, indent=2, ensure_ascii=False, default=str))
        return 0
    if not alerts:
        print("No open alerts." if not args.all else "No alerts.")
        return 0
    for a in alerts:
        value = "" if a.value is None else f"  value {a.value:.2f}"
        tp = "" if a.timepoint is None else f"  t{a.timepoint}"
        print(f"#{a.id:<4} {a.severity.upper():<8} {a.state:<12} {a.plate}  "
              f"{describe_subject(a.subject)}  [{a.rule}]{tp}{value}  opened {_when(a.opened_at)}")
        print(f"      {a.message}")
        for e in events[a.id]:
            if e.user:
                note = f": {e.comment}" if e.comment else ""
                print(f"      {e.action} by {e.user} at {_when(e.at)}{note}")
    n_open = sum(1 for a in alerts if a.active)
    print(f"{n_open} active alert{'s' if n_open != 1 else ''}"
          + (f", {len(alerts) - n_open} closed" if args.all else ""))
    return 0


def cmd_alert_action(args: argparse.Namespace) -> int:
    from nvir_agent.monitor.alerts import act_on_alert, current_user
    from nvir_agent.monitor.listener import describe_subject

    alert = act_on_alert(_database(args), args.id, args.action, comment=args.comment)
    print(f"Alert #{alert.id} ({alert.plate} {describe_subject(alert.subject)}, {alert.rule}) "
          f"is now {alert.state} by {current_user()}.")
    return 0
