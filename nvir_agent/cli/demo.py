"""`nvir-agent demo`: a synthetic plate under drug exposure, watched end to end.

The demo writes its own agent.toml (the global --config is not used), runs
the real engine on a demo folder and prints what happens: each plate read as
the imager writes it, each alert as the agent raises it, and at the end the
ground truth next to what the agent found, with the path of the HTML report.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from nvir_agent.cli.display import has_display
from nvir_agent.errors import UsageError

CHANGE_WORDS = {"opened": "new", "escalated": "now critical", "resolved": "resolved",
                "dismissed": "dismissed", "acknowledged": "acknowledged"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="watch a synthetic plate under drug exposure, end to end (no microscope needed)",
        description="Creates a demo folder with a plate map and an agent.toml, starts the "
        "agent on it with the bundled demo model, writes synthetic spheroid images into "
        "the watched folder time point by time point like an imager, prints alerts as they are raised "
        "and ends with the ground truth next to the fitted IC50s and the path of the HTML "
        "report. Uses its own configuration (--config is ignored).",
    )
    p.add_argument("--headless", action="store_true",
                   help="do not open the review window at the end (also when there is no "
                   "display)")
    p.add_argument("--keep", metavar="DIR",
                   help="keep images, database, config and report in DIR (new or empty); "
                   "default: a temporary folder of which only the report is kept")
    p.add_argument("--fast", action="store_true",
                   help="short pauses between plate reads, none between file chunks (for tests)")
    p.add_argument("--days", type=int, metavar="N",
                   help="plate reads, one a day (default 6)")
    p.add_argument("--compounds", metavar="A,B,…",
                   help="test compounds on the plate (default: all six demo compounds)")
    p.add_argument("--size", type=int, metavar="PX", help="image side in pixels (default 512)")
    p.add_argument("--model", metavar="FILE",
                   help="score with this model file instead of the bundled demo model")
    p.set_defaults(func=cmd_demo)


def _options(args: argparse.Namespace) -> Any:
    from nvir_agent.demo.run import DemoOptions

    changes: dict[str, Any] = {}
    if args.days is not None:
        if not 1 <= args.days <= 30:
            raise UsageError(f"--days {args.days} is outside 1–30.", "Use e.g. --days 6.")
        changes["days"] = args.days
    if args.size is not None:
        if not 128 <= args.size <= 2048:
            raise UsageError(f"--size {args.size} is outside 128–2048 pixels.",
                             "Use e.g. --size 512.")
        changes["size"] = args.size
    if args.model:
        model = Path(args.model).expanduser().absolute()
        if not model.is_file():
            raise UsageError(f"Model file {model} does not exist.",
                             "Give --model an NViR model file, or leave it out to use the "
                             "bundled demo model.")
        changes["model"] = str(model)
    if args.compounds:
        changes["compounds"] = tuple(c.strip() for c in args.compounds.split(",") if c.strip())
    return DemoOptions.fast(**changes) if args.fast else DemoOptions(**changes)


def _print_event(event: Any) -> None:
    if event.kind == "read_started":
        print(f"Read {event.day}/{event.days} (day {event.day}): the imager writes "
              f"{event.images} images …", flush=True)
    elif event.kind == "read_written":
        print(f"  time point {event.day} written in {event.seconds:.1f} s", flush=True)
    elif event.kind == "alert":
        a = event.alert
        word = CHANGE_WORDS.get(event.change, event.change)
        print(f"  ALERT #{a.id} {a.severity.upper()} ({word}): {a.message}", flush=True)
    elif event.kind == "read_analysed":
        print(f"  time point {event.day} analysed by the agent {event.seconds:.1f} s after its last "
              "file was written", flush=True)
    elif event.kind == "waiting":
        print(f"Waiting for the agent: {event.done}/{event.total} images analysed", flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from nvir_agent.demo.run import DemoRun, prepare_workspace
    from nvir_agent.demo.summary import check_against_truth, format_check, format_summary, summarise
    from nvir_agent.synth.plate import POSITIVE_CONTROL

    options = _options(args)
    if args.keep is None:
        options = replace(options, keep_database=False)
    if not args.debug:
        # The demo prints every alert itself (polling the store); the notifier's log
        # sink would repeat critical ones on the console.
        logging.getLogger("nvir_agent.monitor.notify").setLevel(logging.CRITICAL)
    keep = args.keep is not None
    root = Path(args.keep) if keep else Path(tempfile.mkdtemp(prefix="nvir-demo-"))
    if not keep:
        root = root / "demo"
    ws = prepare_workspace(root, options)
    print(f"NViR Agent demo in {ws.root}")
    print(f"  watched folder  {ws.acquisition}  (ImageXpress names, settle "
          f"{options.settle_s:g} s)")
    print(f"  plate map       {ws.plate_maps}")
    print(f"  config          {ws.config}")
    t0 = time.perf_counter()
    finished = False
    try:
        run = DemoRun(ws, options, on_event=_print_event)
        result = run.run()
        finished = True
    finally:
        if not keep and not finished:
            shutil.rmtree(root.parent, ignore_errors=True)
    rows = summarise(result.truth, result.alerts, result.ic50, POSITIVE_CONTROL.name)
    check = check_against_truth(result.truth, run.sim.compounds, result.alerts, result.ic50,
                                run.config.alerts)
    active = [a for a in result.alerts if a.state in ("open", "acknowledged")]
    print()
    print(f"Done: {result.done} images analysed, {result.failed} failed, "
          f"{len(result.alerts)} alerts ({len(active)} open); demo wall time "
          f"{time.perf_counter() - t0:.0f} s.")
    tm = result.timings
    print(f"Time: agent start {tm.get('engine_start_s', 0):.1f} s, imager "
          f"{tm.get('imager_s', 0):.1f} s (rendering, chunked writing), between reads "
          f"{tm.get('between_reads_s', 0):.1f} s (pause of {options.read_gap_s:g} s, or until "
          f"the agent caught up), final check {tm.get('final_wait_s', 0):.1f} s, report "
          f"{tm.get('report_s', 0):.1f} s.")
    print()
    print(format_summary(rows))
    print()
    print(format_check(check))
    print()
    if not args.headless and has_display():
        print("Opening the review window (close it to end the demo) …", flush=True)
        from nvir_agent.config import load_config
        from nvir_agent.gui.app import run_review

        run_review(load_config(ws.config, check_folders=False), ws.database)
    if not keep:
        shutil.rmtree(ws.acquisition, ignore_errors=True)
        for p in ws.root.glob(ws.database.name + "*"):
            p.unlink(missing_ok=True)
        print("Images and database were removed (use --keep DIR to keep them).")
    print(f"Report: {result.report}")
    return 0
