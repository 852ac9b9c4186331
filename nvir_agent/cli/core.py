"""Core commands: run, process, status, export, names, paths.

The engine (and through it OpenCV, torch …) is imported inside the command
functions so that `nvir-agent --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nvir_agent import paths
from nvir_agent.config import find_config_path, load_config, use_all_cores
from nvir_agent.errors import NamingError, UsageError
from nvir_agent.ingest.filenames import PRESET_NAMES, parse_path
from nvir_agent.ingest.pathnames import readable
from nvir_agent.plate import ImageKey

log = logging.getLogger(__name__)

NAME_KEYS = ("path", "vendor", "plate", "well", "row", "column", "field", "channel", "z",
             "timepoint", "elapsed_s")
# The first export columns; measurement columns follow, sorted.
EXPORT_KEYS = ("path", "vendor", "plate", "well", "row", "column", "field", "channel", "z",
               "timepoint", "elapsed_s", "state", "error", "size", "mtime", "attempts",
               "updated_at", "viability", "viability_low", "viability_high", "typicality",
               "ood_distance", "unlike_training")
_INTERNAL = ("id", "attempts", "updated_at", "size", "mtime", "state")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="watch the configured folders and analyse every new image")
    p.add_argument("--headless", action="store_true",
                   help="run without the tray icon and review window (no Qt is loaded; logs "
                   "go to the console and the log file); also the case without a display")
    p.add_argument("--replace-damaged-database", action="store_true",
                   help="if the database file is damaged or is not an NViR Agent database, "
                   "keep it aside (renamed with the date and time; nothing is deleted) and "
                   "start a new, empty one; a healthy database is used as it is")
    p.set_defaults(func=cmd_run, log_to_file=True, log_verbose=True)

    p = sub.add_parser("process", help="analyse given image files or folders once")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line")
    p.add_argument("--force", action="store_true",
                   help="analyse again even files already analysed unchanged")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("status", help="images seen/done/failed/pending, folder health and "
                       "problems (exit 1 when there are any)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "export", help="results as tables: per image, per well and time point, or per compound",
        description="Export results with their provenance (agent version, model file and "
        "hash, training data). --level image: every image with its key, state and "
        "measurements; well: one row per plate x well x time point with role, compound, "
        "concentration, group, viability (relative to vehicle and to baseline), whether "
        "the counting rule includes it and why not, QC flags and image paths; compound: "
        "per compound and time point the IC50 under the reporting rule with CI, hill, R², "
        "margin of safety, reliability and n. --format xlsx writes all three levels, one "
        "sheet each, plus a provenance sheet.")
    p.add_argument("--level", choices=("image", "well", "compound"), default="image",
                   help="default: image")
    p.add_argument("--format", choices=("csv", "jsonl", "xlsx"), default="csv",
                   help="default: csv (xlsx needs --out)")
    p.add_argument("--out", metavar="FILE", help="write here instead of the console")
    p.add_argument("--station", metavar="NAME",
                   help="only images of this station (level image; several microscopes on one "
                   "store)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("names", help="show how file names are read (plate, well, time point)")
    p.add_argument("files", nargs="+", metavar="FILE", help="file names or paths (need not exist)")
    p.add_argument("--json", action="store_true", help="one JSON object per name and line")
    p.add_argument("--preset", choices=PRESET_NAMES,
                   help="naming preset to use instead of watch.naming")
    p.set_defaults(func=cmd_names)

    p = sub.add_parser("paths", help="print config, data, log and cache locations")
    p.set_defaults(func=cmd_paths)


# --- run ----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # before the heavy imports: config errors come fast
    from nvir_agent.cli.display import has_display

    tray = not args.headless and has_display()
    if not config.watch.folders and not tray:  # the tray's Settings… can add them
        where = find_config_path(args.config)
        raise UsageError(
            "No folders to watch: the agent would wait for images that can never arrive.",
            f"Set folders = [\"/path/to/acquisitions\"] under [watch] in "
            f"{where or 'agent.toml (see `nvir-agent paths` for where it belongs)'}, "
            "or try `nvir-agent demo`.")
    replace = args.replace_damaged_database
    if tray:
        from nvir_agent.gui.app import run_tray

        return run_tray(config, replace_damaged_database=replace)
    from nvir_agent.app import build_engine

    engine = build_engine(config, replace_damaged_database=replace)
    try:
        engine.start()
    except BaseException:
        engine.stop()
        raise

    def on_signal(signum: int, _frame: object) -> None:
        log.info("Received %s; stopping", signal.Signals(signum).name)
        engine.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not engine.wait(1.0):
            pass
    finally:
        engine.stop()
    if engine.error is not None:
        raise engine.error
    return 0


# --- process ------------------------------------------------------------------------------


def _process_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in _INTERNAL}
    out["status"] = "ok" if row["state"] == "done" else "failed"
    for k, default in (("found", None), ("qc", []), ("viability", None),
                       ("viability_low", None), ("viability_high", None), ("typicality", None),
                       ("ood_distance", None), ("unlike_training", False), ("model", None)):
        out.setdefault(k, default)
    return out


def _where(row: dict[str, Any]) -> str:
    t = row.get("timepoint")
    return " ".join(str(s) for s in (row.get("plate"), row.get("well"),
                                      None if t is None else f"t{t}") if s) or "-"


def cmd_process(args: argparse.Namespace) -> int:
    config = use_all_cores(load_config(args.config, check_folders=False))
    from nvir_agent.app import build_engine

    engine = build_engine(config)
    try:
        rows = engine.process_paths(args.paths, force=args.force)
    finally:
        engine.close()
    ok = 0
    for row in rows:
        out = _process_row(row)
        ok += out["status"] == "ok"
        if args.json:
            print(json.dumps(out, default=str), flush=False)
        else:
            v = out.get("viability")
            extra = f"  viability {v:.2f}" if isinstance(v, float) else ""
            lo, hi = out.get("viability_low"), out.get("viability_high")
            if isinstance(v, float) and isinstance(lo, float) and isinstance(hi, float):
                extra += f" ({lo:.2f}–{hi:.2f})"
            if out.get("unlike_training"):
                extra += "  unlike the model's training images"
            msg = f"  {out['error']}" if out["error"] else extra
            print(f"{out['status']:<6}  {_where(out):<20}  {out['path']}{msg}")
    print(f"{len(rows)} images: {ok} ok, {len(rows) - ok} failed (database {engine.database})",
          file=sys.stderr)
    return 0


# --- status -------------------------------------------------------------------------------


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_status(args: argparse.Namespace) -> int:
    from nvir_agent.core.status import read_status

    config = load_config(args.config, check_folders=False)
    st = read_status(config)
    if args.json:
        print(json.dumps(st.as_dict()))
        return 1 if st.problems else 0
    state = (f"running (pid {st.pid}, since {_when(st.started_at)})" if st.running
             else "not running")
    print(f"agent:     {state}")
    print(f"database:  {st.database}")
    print(f"model:     {st.model}")
    print(f"images:    {st.seen} seen, {st.done} done, {st.failed} failed, "
          f"{st.pending} pending, {st.settling} settling")
    if st.error:
        print(f"error:     {st.error}")
    print("folders:" if st.folders else "folders:   none configured (watch.folders)")
    for f in st.folders:
        net = " (network)" if f.network else ""
        detail = f" — {f.detail}" if f.detail else ""
        restarts = f", {f.restarts} restarts" if f.restarts else ""
        print(f"  {f.folder}  {f.mode}{net}  {f.health}{restarts}{detail}")
    if st.spooling:
        print("store:     the server is away: results go to the local spool until it returns")
    others = [s for s in st.stations if s.name != st.station]
    if others:
        print(f"stations ({len(st.stations)}, this one: {st.station}):")
        for s in st.stations:
            how = ("running" if s.running else "not running") + (
                ", paused" if s.paused else "") + (", spooling" if s.spooling else "")
            print(f"  {s.name}{' (' + s.host + ')' if s.host else ''}: {how}, last heartbeat "
                  f"{_when(s.heartbeat_at)}; {s.done} done, {s.failed} failed, "
                  f"{s.pending} pending; {len(s.folders)} folder(s)")
    if st.problems:
        print(f"problems ({len(st.problems)}):")
        for problem in st.problems:
            print(f"  - {problem}")
        return 1
    return 0


# --- export -------------------------------------------------------------------------------


def _export_tables(config: Any, db: str | Path, levels: Iterable[str],
                   station: str | None = None) -> tuple[
        dict[str, tuple[list[str], list[dict[str, Any]]]], Any]:
    """level → (columns, rows) for the levels asked, and the provenance."""
    from nvir_agent.cli.report import plate_map_lookup
    from nvir_agent.monitor.timecourse import load_plate_timecourses, settings_from_config
    from nvir_agent.report import export
    from nvir_agent.report.dili import fit_compounds, records_from_points
    from nvir_agent.report.provenance import collect_provenance
    from nvir_agent.store import StoreReader, redact

    levels = list(levels)
    out: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
    with StoreReader(db) as reader:
        images = list(reader.export_rows(station=station))
        provenance = collect_provenance(config, database=redact(db),
                                        models_in_data=reader.model_counts())
    if "image" in levels:
        out["image"] = (export.columns_of(images, EXPORT_KEYS), images)
    if "well" in levels or "compound" in levels:
        plates = load_plate_timecourses(db, maps=plate_map_lookup(config, db),
                                        **settings_from_config(config))
        if "well" in levels:
            paths = {int(r["id"]): str(r["path"]) for r in images if r.get("id") is not None}
            out["well"] = (list(export.WELL_COLUMNS), export.well_rows(plates, paths))
        if "compound" in levels:
            points = [p for tc in plates.values() for p in tc.points]
            fits = fit_compounds(records_from_points(points))
            out["compound"] = (list(export.COMPOUND_COLUMNS), export.compound_rows(fits))
    return out, provenance


def cmd_export(args: argparse.Namespace) -> int:
    from nvir_agent.report import export
    from nvir_agent.store import database_url

    config = load_config(args.config, check_folders=False)
    db = database_url(config)
    if args.format == "xlsx":
        if not args.out:
            raise UsageError("--format xlsx needs --out FILE.xlsx.",
                             "For example: nvir-agent export --format xlsx --out results.xlsx")
        tables, provenance = _export_tables(config, db, export.LEVELS, args.station)
        try:
            counts = export.write_xlsx(args.out, tables, provenance)
        except OSError as exc:
            raise UsageError(f"Cannot write {args.out}: {exc.strerror or exc}.",
                             "Choose a file in a folder you may write to.") from exc
        print(f"Exported {', '.join(f'{n} {k} rows' for k, n in counts.items())} to {args.out}",
              file=sys.stderr)
        return 0
    tables, provenance = _export_tables(config, db, [args.level], args.station)
    columns, rows = tables[args.level]
    if args.out:
        try:
            with open(args.out, "w", newline="", encoding="utf-8") as fh:
                n = export.write_text(rows, columns, fh, args.format, provenance)
        except OSError as exc:
            raise UsageError(f"Cannot write {args.out}: {exc.strerror or exc}.",
                             "Choose a file in a folder you may write to.") from exc
        what = "images" if args.level == "image" else f"{args.level} rows"
        print(f"Exported {n} {what} to {args.out}", file=sys.stderr)
    else:
        export.write_text(rows, columns, sys.stdout, args.format, provenance)
    return 0


# --- names --------------------------------------------------------------------------------


def _name_row(path: str, preset: str, regex: str | None) -> dict[str, Any]:
    try:
        key = parse_path(path, preset, regex)
        error = None
    except NamingError as exc:
        key, error = ImageKey(), exc.message
    row = {"path": readable(path), **key.as_dict()}
    row = {k: row[k] for k in NAME_KEYS}
    if error:
        row["error"] = error
    return row


def cmd_names(args: argparse.Namespace) -> int:
    config = load_config(args.config, check_folders=False)
    preset = args.preset or config.watch.naming
    regex = config.watch.regex or None
    if preset == "regex" and not regex:
        raise UsageError("--preset regex needs watch.regex in agent.toml.",
                         "Set watch.regex, or choose a vendor preset.")
    for f in args.files:
        row = _name_row(f, preset, regex)
        if args.json:
            print(json.dumps(row))
        elif "error" in row:
            print(f"{row['path']}: {readable(row['error'])}")
        else:
            parts = [f"{k}={row[k]}" for k in NAME_KEYS[1:] if row[k] is not None]
            print(f"{row['path']}: {' '.join(parts)}")
    return 0


# --- paths --------------------------------------------------------------------------------


def cmd_paths(args: argparse.Namespace) -> int:
    cfg: Path | None = find_config_path(args.config)
    config_line = str(cfg) if cfg else (
        f"{paths.user_config_dir() / 'agent.toml'} (none yet: defaults apply)")
    database = _database_line(args.config)
    print(f"config:   {config_line}")
    print(f"database: {database}")
    print(f"data:     {paths.user_data_dir()}")
    print(f"log:      {paths.user_log_dir()}")
    print(f"cache:    {paths.user_cache_dir()}")
    return 0


def _database_line(config_arg: str | None) -> str:
    from nvir_agent.store import database_path

    return str(database_path(load_config(config_arg, check_folders=False)))
