"""The one-command demo: a synthetic plate under drug exposure, watched end to end.

:func:`prepare_workspace` lays out a demo folder — an empty acquisition folder,
the demo plate map, the compounds' ground truth and an ``agent.toml`` that
watches the folder with the bundled demo model. :class:`DemoRun` then starts
the real :class:`~nvir_agent.core.engine.Engine` (the one `nvir-agent run` uses)
in this process, plays the imager — renders every well of one plate read with
:class:`~nvir_agent.synth.plate.PlateSimulation` and writes it slowly, in
chunks, with ImageXpress names, one read every few seconds (and not before
the agent has analysed the previous one, so each read's alerts show before
the next read starts) — follows the alerts the monitor raises in the store,
waits until every image is analysed, writes the HTML report and returns a
:class:`DemoResult` with the ground truth next to what the agent found.

The engine runs in-process because it already runs on its own threads
(watcher, ingest, worker): the demo's main thread is free to act as the
imager, reads the engine's state directly (``idle``, ``error``) instead of
parsing another process's output, and the model is loaded once. Everything
the engine sees still goes through the real folder, the real watcher and the
real SQLite store; alerts are read back from the store, as any client does.

Nothing here prints: progress is reported through the ``on_event`` callback
(the CLI prints it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nvir_agent.app import build_engine
from nvir_agent.config import Config, load_config
from nvir_agent.core.engine import Engine
from nvir_agent.errors import AgentError, DataError, ModelLoadError, StoreError
from nvir_agent.model import locate
from nvir_agent.monitor.alerts import Alert, list_alerts
from nvir_agent.report.html import Ic50Row, collect_report, ic50_rows, render_html
from nvir_agent.store import StoreReader
from nvir_agent.synth.plate import (
    DEFAULT_COMPOUNDS,
    POSITIVE_CONTROL,
    Compound,
    PlateSimulation,
    demo_plate_rows,
    load_plate_maps,
    write_plate_map,
)

log = logging.getLogger(__name__)

DEMO_PLATE = "DEMO-P1"
NAMING = "imagexpress"
POLL_S = 0.25


class DemoError(AgentError):
    """The demo could not run to its end."""


@dataclass(frozen=True)
class DemoOptions:
    """What the demo plays. The defaults are the full demo (96 wells, 6 reads)."""

    days: int = 6
    size: int = 512  # image side in pixels
    seed: int = 11
    compounds: tuple[str, ...] | None = None  # test compounds on the plate; None: all six
    read_gap_s: float = 3.0  # pause between plate reads
    catch_up: bool = True  # start the next read only once the agent has analysed this one
    chunk_bytes: int = 64 * 1024  # the imager writes each file in chunks of this size …
    chunk_delay_s: float = 0.004  # … with this pause between chunks
    settle_s: float = 0.5  # the agent's watch.settle_s
    model: str = ""  # model file; empty: the bundled demo model
    timeout_s: float = 900.0  # longest wait for the agent to finish analysing
    keep_database: bool = True  # False: the database is deleted after the run (the report says so)

    @classmethod
    def fast(cls, **changes: Any) -> DemoOptions:
        """Short waits (for tests): 0.3 s between reads, no pause between chunks."""
        base = cls(read_gap_s=0.3, chunk_delay_s=0.0, settle_s=0.2)
        return replace(base, **changes)


@dataclass(frozen=True)
class DemoWorkspace:
    """Where one demo run keeps its files."""

    root: Path
    acquisition: Path
    plate_maps: Path
    config: Path
    database: Path
    report: Path
    truth: Path

    @classmethod
    def at(cls, root: Path) -> DemoWorkspace:
        return cls(root=root, acquisition=root / "acquisition", plate_maps=root / "platemaps",
                   config=root / "agent.toml", database=root / "nvir-demo.sqlite3",
                   report=root / "nvir-demo-report.html", truth=root / "truth.json")


@dataclass(frozen=True)
class DemoEvent:
    """Progress for the console: ``kind`` is read_started, read_written,
    read_analysed, alert, waiting or report."""

    kind: str
    day: int | None = None
    days: int = 0
    images: int = 0
    seconds: float = 0.0
    alert: Alert | None = None
    change: str = ""  # for alerts: opened | escalated | resolved | dismissed | …
    done: int = 0
    total: int = 0


@dataclass
class DemoResult:
    """What the demo did and found."""

    workspace: DemoWorkspace
    truth: dict[str, Any]
    alerts: list[Alert]
    first_seen: dict[int, int]  # alert id → plate read being written when it appeared
    ic50: list[Ic50Row]
    report: Path
    images: int
    done: int
    failed: int
    wall_s: float
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- set-up


def demo_compounds(names: tuple[str, ...] | None = None) -> dict[str, Compound]:
    """The positive control and the chosen test compounds (all six by default)."""
    tests = [n for n in DEFAULT_COMPOUNDS if n != POSITIVE_CONTROL.name]
    chosen = tests if names is None else list(names)
    unknown = [n for n in chosen if n not in tests]
    if unknown:
        raise DataError(f"Unknown demo compound(s): {', '.join(unknown)}.",
                        f"Choose from: {', '.join(tests)}.")
    return {POSITIVE_CONTROL.name: POSITIVE_CONTROL,
            **{n: DEFAULT_COMPOUNDS[n] for n in chosen}}


def demo_plate(compounds: dict[str, Compound]) -> list[dict[str, Any]]:
    """The 96-well demo layout, keeping only wells of the chosen compounds."""
    return [r for r in demo_plate_rows(DEMO_PLATE)
            if not r["compound"] or r["compound"] in compounds]


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_text(ws: DemoWorkspace, options: DemoOptions) -> str:
    """The demo's agent.toml (paths relative to the file)."""
    model = _toml_str(options.model) if options.model else '""  # the bundled demo model'
    return f"""\
# Written by `nvir-agent demo`. Every key not listed keeps its default
# (see agent.toml.example).

[watch]
folders = [{_toml_str(ws.acquisition.name)}]
naming = "{NAMING}"
settle_s = {options.settle_s}
rescan_interval_s = 30.0

[storage]
database = {_toml_str(ws.database.name)}

[model]
path = {model}

[plates]
maps = {_toml_str(ws.plate_maps.name)}

[notify]
console = false  # the demo prints every alert itself
min_interval_s = 5.0
"""


def prepare_workspace(root: str | Path, options: DemoOptions) -> DemoWorkspace:
    """Create the demo folder: acquisition folder, plate map, truth and agent.toml.

    ``root`` must be empty or not exist yet (a demo never mixes with old data).
    """
    ws = DemoWorkspace.at(Path(root).absolute())
    if ws.root.exists() and (not ws.root.is_dir() or any(ws.root.iterdir())):
        raise DataError(f"{ws.root} is not an empty folder.",
                        "Give the demo a new or empty folder; it does not mix with "
                        "other files.")
    compounds = demo_compounds(options.compounds)
    try:
        ws.acquisition.mkdir(parents=True, exist_ok=True)
        ws.plate_maps.mkdir(exist_ok=True)
        write_plate_map(ws.plate_maps / f"{DEMO_PLATE}.csv", demo_plate(compounds))
        ws.config.write_text(config_text(ws, options), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"Cannot create the demo folder {ws.root}: {exc.strerror or exc}.",
                        "Choose a folder you may write to.") from exc
    return ws


def simulation(ws: DemoWorkspace, options: DemoOptions) -> PlateSimulation:
    """The plate simulation behind the demo's images."""
    maps = load_plate_maps(ws.plate_maps / f"{DEMO_PLATE}.csv")
    return PlateSimulation(maps, demo_compounds(options.compounds), days=options.days,
                           seed=options.seed, size=options.size)


# --------------------------------------------------------------------------- alerts


class AlertFeed:
    """Reads the alerts table of a running agent's store and reports what changed."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self._seen: dict[int, tuple[str, str]] = {}

    def poll(self) -> list[tuple[str, Alert]]:
        """(change, alert) for every alert opened, escalated or closed since the last poll."""
        if not self.database.is_file():
            return []
        try:
            with StoreReader(self.database) as reader:
                alerts = list_alerts(reader, include_closed=True)
        except (StoreError, OSError) as exc:  # e.g. while the schema is created
            log.debug("alerts not readable yet: %s", exc)
            return []
        changes = []
        for a in sorted(alerts, key=lambda a: a.id):
            before = self._seen.get(a.id)
            if before is None:
                changes.append(("opened", a))
            elif before[0] != a.severity:
                changes.append(("escalated", a))
            elif before[1] != a.state:
                changes.append((a.state, a))
            self._seen[a.id] = (a.severity, a.state)
        return changes


# --------------------------------------------------------------------------- run


class DemoRun:
    """Plays the imager against the real engine and collects the outcome."""

    def __init__(self, ws: DemoWorkspace, options: DemoOptions,
                 on_event: Callable[[DemoEvent], None] | None = None) -> None:
        self.ws = ws
        self.options = options
        self.on_event = on_event or (lambda _e: None)
        self.config: Config = load_config(ws.config)
        if locate.resolve_model(self.config).path is None:
            raise ModelLoadError(
                f"The demo needs a model, and the bundled demo model {locate.demo_model_path()} is "
                "missing.",
                "Reinstall from a complete copy of NViR Agent, or give the demo a model file "
                "with --model FILE.")
        self.sim = simulation(ws, options)
        self.feed = AlertFeed(ws.database)
        self.first_seen: dict[int, int] = {}
        self._day = 0
        self._last_poll = 0.0

    def _emit(self, event: DemoEvent) -> None:
        self.on_event(event)

    def _poll_alerts(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_poll < POLL_S:
            return
        self._last_poll = now
        for change, alert in self.feed.poll():
            self.first_seen.setdefault(alert.id, self._day)
            self._emit(DemoEvent("alert", day=self._day, alert=alert, change=change))

    def _check_engine(self, engine: Engine) -> None:
        if engine.error is not None:
            raise engine.error

    def run(self) -> DemoResult:
        """Stream every read into the watched folder, wait for the analysis, write
        the report. Raises the engine's error when it stops on a fatal one."""
        t0 = time.perf_counter()
        o = self.options
        truth = self.sim.truth()
        _write_json(self.ws.truth, truth)
        wells = self.sim.wells()
        total = len(wells) * len(self.sim.reads)
        timings: dict[str, float] = {"imager_s": 0.0}
        engine = build_engine(self.config)
        try:
            engine.start()
            timings["engine_start_s"] = time.perf_counter() - t0
            written = 0
            for day in self.sim.reads:
                self._day = day
                self._emit(DemoEvent("read_started", day=day, days=o.days, images=len(wells)))
                t = time.perf_counter()
                self.sim.write_read(day, self.ws.acquisition, NAMING,
                                    chunk_delay_s=o.chunk_delay_s, chunk_bytes=o.chunk_bytes,
                                    on_file=lambda _p: self._poll_alerts())
                seconds = time.perf_counter() - t
                timings["imager_s"] += seconds
                written += len(wells)
                self._emit(DemoEvent("read_written", day=day, days=o.days, images=len(wells),
                                     seconds=seconds))
                last = day == self.sim.reads[-1]
                t = time.perf_counter()
                self._wait(engine, written if o.catch_up else 0, 0.0 if last else o.read_gap_s)
                timings["between_reads_s"] = (timings.get("between_reads_s", 0.0)
                                              + time.perf_counter() - t)
            t = time.perf_counter()
            done, failed = self._wait_processed(engine, total)
            timings["final_wait_s"] = time.perf_counter() - t
        finally:
            engine.stop()
        self._poll_alerts(force=True)
        self._check_engine(engine)
        t = time.perf_counter()
        report, rows = self._report()
        timings["report_s"] = time.perf_counter() - t
        self._emit(DemoEvent("report"))
        with StoreReader(self.ws.database) as reader:
            alerts = list_alerts(reader, include_closed=True)
        return DemoResult(
            workspace=self.ws, truth=truth, alerts=alerts, first_seen=dict(self.first_seen),
            ic50=rows, report=report, images=total, done=done, failed=failed,
            wall_s=time.perf_counter() - t0, timings=timings,
        )

    def _finished(self, engine: Engine) -> tuple[int, int]:
        counts = engine.store.counts()
        return counts.done, counts.failed

    def _wait(self, engine: Engine, images: int, at_least_s: float) -> None:
        """Wait ``at_least_s`` and until the agent has analysed ``images`` images
        (and told the monitor), showing alerts as they come."""
        start = time.monotonic()
        end = start + at_least_s
        deadline = start + self.options.timeout_s
        caught_up = images == 0
        while True:
            self._poll_alerts()
            self._check_engine(engine)
            if not caught_up:
                caught_up = sum(self._finished(engine)) >= images
                if caught_up:
                    engine.wait_idle(timeout=5.0, quiet_s=0.2)  # the monitor has run
                    self._poll_alerts(force=True)
                    self._emit(DemoEvent("read_analysed", day=self._day, days=self.options.days,
                                         seconds=time.monotonic() - start))
            if caught_up and time.monotonic() >= end:
                return
            if time.monotonic() > deadline:
                raise self._too_slow(sum(self._finished(engine)), images)
            time.sleep(POLL_S)

    def _too_slow(self, finished: int, images: int) -> DemoError:
        return DemoError(
            f"The agent analysed only {finished} of {images} demo images within "
            f"{self.options.timeout_s:.0f} s.",
            "Run `nvir-agent --debug demo` to see what it is doing; a slow machine may need a "
            "smaller demo (--days 3 --size 384).")

    def _wait_processed(self, engine: Engine, total: int) -> tuple[int, int]:
        """Wait until every written image is analysed and the engine is idle."""
        deadline = time.monotonic() + self.options.timeout_s
        next_progress = 0.0
        while True:
            self._poll_alerts()
            self._check_engine(engine)
            done, failed = self._finished(engine)
            finished = done + failed
            if finished < total and time.monotonic() >= next_progress:
                self._emit(DemoEvent("waiting", done=finished, total=total))
                next_progress = time.monotonic() + 5.0
            if finished >= total and engine.wait_idle(timeout=2.0, quiet_s=0.3):
                return done, failed
            if time.monotonic() > deadline:
                raise self._too_slow(finished, total)
            time.sleep(POLL_S)

    def _report(self) -> tuple[Path, list[Ic50Row]]:
        label = None if self.options.keep_database else (
            f"{self.ws.database.name} (temporary demo database, deleted after the run; "
            "`nvir-agent demo --keep DIR` keeps it)")
        data = collect_report(self.ws.database, config=self.config, database_label=label)
        try:
            self.ws.report.write_text(render_html(data), encoding="utf-8")
        except OSError as exc:
            raise DemoError(f"Cannot write the report {self.ws.report}: "
                            f"{exc.strerror or exc}.", "Check the free disk space.") from exc
        return self.ws.report, ic50_rows(data.fits)


def _write_json(path: Path, value: Any) -> None:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    try:
        path.write_text(json.dumps(clean(value), indent=1), encoding="utf-8")
    except OSError as exc:
        raise DemoError(f"Cannot write {path}: {exc.strerror or exc}.",
                        "Check the free disk space.") from exc


def run_demo(root: str | Path, options: DemoOptions | None = None,
             on_event: Callable[[DemoEvent], None] | None = None) -> DemoResult:
    """Prepare a demo folder at ``root`` and run the demo in it."""
    options = options or DemoOptions()
    ws = prepare_workspace(root, options)
    return DemoRun(ws, options, on_event).run()

