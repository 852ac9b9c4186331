"""What the agent is doing, as plain values for the CLI and the UI.

``EngineStatus`` is the snapshot ``Engine.status()`` returns in the agent's
process; ``read_status`` gives the same picture to another process (the CLI,
the review window) from the store: image counts plus the running agent's last
heartbeat (observer modes and folder health) and, in a store shared by several
stations, every station with its own heartbeat, folders and health. Light on
purpose: no analysis, model or Qt imports.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent.config import Config
from nvir_agent.errors import AgentError
from nvir_agent.ingest.watch import FolderStatus
from nvir_agent.model.locate import describe_model_source, resolve_model
from nvir_agent.store import (
    StationRow,
    StoreReader,
    database_url,
    redact,
    station_name,
    write_locked,
)
from nvir_agent.store.url import is_postgres, sqlite_path

HEARTBEAT_S = 2.0  # how often a running engine records its snapshot
# Less free space than this under a SQLite database is reported: SQLite needs room for
# new pages and for its write-ahead log (a running agent that cannot write cannot
# record its own status either, so the status says it from here).
LOW_DISK_BYTES = 1 << 20


@dataclass(frozen=True)
class StationStatus:
    """One station of the store as its last heartbeat shows it."""

    name: str
    host: str | None = None
    running: bool = False
    pid: int | None = None
    heartbeat_at: float | None = None
    folders: list[FolderStatus] = field(default_factory=list)
    seen: int = 0
    pending: int = 0
    done: int = 0
    failed: int = 0
    paused: bool = False
    spooling: bool = False  # the station writes to its local spool (server away)
    error: str | None = None


def station_status(row: StationRow, now: float, stale_after_s: float) -> StationStatus:
    b = row.heartbeat
    snap = b.snapshot if b else {}
    running = row.running(now, stale_after_s)
    return StationStatus(
        name=row.name, host=row.host, running=running, pid=b.pid if b else None,
        heartbeat_at=b.heartbeat_at if b else None,
        folders=[FolderStatus(**f) for f in snap.get("folders", [])] if running else [],
        seen=row.counts.seen, pending=row.counts.pending, done=row.counts.done,
        failed=row.counts.failed, paused=bool(snap.get("paused")) and running,
        spooling=bool(snap.get("spooling")) and running, error=snap.get("error"))


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot for the CLI and the UI."""

    running: bool
    database: str
    seen: int = 0
    pending: int = 0
    done: int = 0
    failed: int = 0
    settling: int = 0
    folders: list[FolderStatus] = field(default_factory=list)
    started_at: float | None = None
    heartbeat_at: float | None = None
    pid: int | None = None
    error: str | None = None
    model: str = ""  # which model scores, or why scoring is off
    paused: bool = False  # analysis paused by the operator (new files are still recorded)
    problems: list[str] = field(default_factory=list)  # what stops the agent working well
    station: str = ""  # this agent's name in the store
    spooling: bool = False  # the server is away: results go to the local spool for now
    stations: list[StationStatus] = field(default_factory=list)  # every station of the store

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_problems(config: Config, db_error: str | None = None) -> list[str]:
    """What would stop the agent from working: a configured model file that is
    missing, a watched folder that is missing or unreadable, a database that
    cannot be opened. Each item names the thing and what to do."""
    problems = []
    src = resolve_model(config)
    if config.model.enabled and config.model.path and src.path is not None \
            and not Path(src.path).is_file():
        problems.append(f"model file {src.path} does not exist: fix [model] path in "
                        "agent.toml, or remove it to use the bundled demo model")
    for f in config.watch.folders:
        folder = Path(config.resolve(f))
        if not folder.exists():
            problems.append(f"watched folder {folder} does not exist (or the share is not "
                            "mounted): create or mount it, or fix watch.folders")
        elif not folder.is_dir():
            problems.append(f"watched folder {folder} is not a folder: fix watch.folders")
        elif not os.access(folder, os.R_OK | os.X_OK):
            problems.append(f"watched folder {folder} cannot be read by this user: "
                            "check its permissions")
    if db_error:
        problems.append(db_error)
    url = database_url(config)
    if not is_postgres(url):
        folder = sqlite_path(url).parent
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None  # a missing folder is said above
        if free is not None and free < LOW_DISK_BYTES:
            problems.append(f"the disk that holds the database {sqlite_path(url)} is full "
                            f"({free // 1024} KiB free): free some space on it; the agent "
                            "waits and carries on by itself once there is room")
    return problems


def _silent_agent(url: str, beat: Any, snap: dict[str, Any], running: bool,
                  now: float) -> list[str]:
    """An agent that did not stop but whose heartbeat is late, on a SQLite file another
    program holds locked: it cannot write its heartbeat, and waits for the lock."""
    if running or not snap.get("running") or beat is None or is_postgres(url):
        return []
    db = sqlite_path(url)
    if not write_locked(db):
        return []
    return [f"database {db} locked by another program: the agent (process {beat.pid}, "
            f"last heard {now - (beat.heartbeat_at or now):.0f} s ago) cannot write to it "
            "and waits; close the program holding it open for writing"]


def read_status(config: Config, *, stale_after_s: float = 3 * HEARTBEAT_S) -> EngineStatus:
    """The status as another process sees it: store counts plus the running
    agent's last heartbeat (observer modes and health), every station of the store,
    and the problems found (here, and those the running agent reported)."""
    url = database_url(config)
    station = station_name(config)
    configured = [
        FolderStatus(str(config.resolve(f)), "-", False, "not running")
        for f in config.watch.folders
    ]
    if not is_postgres(url) and not sqlite_path(url).is_file():
        db = sqlite_path(url)
        db_error = None
        if not db.parent.is_dir():
            db_error = (f"database folder {db.parent} does not exist: create it or fix "
                        "storage.database")
        return EngineStatus(running=False, database=redact(url), folders=configured,
                            model=describe_model_source(config), station=station,
                            problems=find_problems(config, db_error))
    try:
        with StoreReader(url, station=station) as reader:
            counts = reader.counts(station=station if is_postgres(url) else None)
            beat = reader.heartbeat(station)
            rows = reader.stations()
    except AgentError as exc:
        return EngineStatus(running=False, database=redact(url), folders=configured,
                            model=describe_model_source(config), station=station,
                            error=exc.message if is_postgres(url) else None,
                            problems=find_problems(
                                config, f"database {redact(url)} cannot be read: {exc.message}"))
    now = time.time()
    snap = beat.snapshot if beat else {}
    running = bool(
        beat and snap.get("running") and now - (beat.heartbeat_at or 0) < stale_after_s
    )
    folders = [FolderStatus(**f) for f in snap.get("folders", [])] if running else configured
    return EngineStatus(
        running=running, database=redact(url), seen=counts.seen, pending=counts.pending,
        done=counts.done, failed=counts.failed,
        settling=int(snap.get("settling", 0)) if running else 0, folders=folders,
        started_at=beat.started_at if beat else None,
        heartbeat_at=beat.heartbeat_at if beat else None,
        pid=beat.pid if beat else None, error=snap.get("error"),
        paused=bool(snap.get("paused")) if running else False,
        model=describe_model_source(config), station=station,
        problems=[*find_problems(config), *(snap.get("problems") or [] if running else []),
                  *_silent_agent(url, beat, snap, running, now)],
        spooling=bool(snap.get("spooling")) if running else False,
        stations=[station_status(r, now, stale_after_s) for r in rows],
    )
