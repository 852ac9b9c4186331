"""`nvir-agent review`: the review window of flagged wells (PySide6, imported lazily)."""

from __future__ import annotations

import argparse

from nvir_agent.cli.display import has_display
from nvir_agent.config import load_config
from nvir_agent.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review", help="open the review window of flagged wells",
        description="Shows the alerts, the plate heatmap, each well's images with the "
        "spheroid outline, its time course and its compound's dose-response; acknowledge "
        "or dismiss alerts there.")
    p.add_argument("--plate", metavar="P", help="open on this plate")
    p.add_argument("--alert", type=int, metavar="N", help="open on alert N")
    p.add_argument("--station", metavar="NAME",
                   help="only the plates and alerts of this station (several microscopes on "
                        "one store; the window's Station picker changes it)")
    p.add_argument("--screenshot", metavar="FILE",
                   help="load the window, wait until its data is drawn, save a PNG of it "
                   "and exit (works with QT_QPA_PLATFORM=offscreen)")
    p.set_defaults(func=cmd_review)


def cmd_review(args: argparse.Namespace) -> int:
    config = load_config(args.config, check_folders=False)
    from nvir_agent.store import database_url, redact, store_exists

    db = database_url(config)
    if not store_exists(db):
        raise UsageError(f"There is no database at {redact(db)} yet, so there is nothing "
                         "to review.",
                         "Start the agent (`nvir-agent run`) or check --config.")
    if not has_display():
        raise UsageError("The review window needs a display.",
                         "Run it on the desktop, or use QT_QPA_PLATFORM=offscreen with "
                         "--screenshot.")
    from nvir_agent.gui.app import run_review

    return run_review(config, db, plate=args.plate, alert_id=args.alert,
                      screenshot=args.screenshot, station=args.station)
