"""What the agent is doing, as plain values for the CLI and the UI.

``EngineStatus`` is the snapshot ``Engine.status()`` returns in the agent's
process; ``read_status`` gives the same picture to another process (the CLI,
the review window) from the store: image counts plus the running agent's last
heartbeat (observer modes and folder health). Light on purpose: no analysis,
model or Qt imports.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent.config import Config
from nvir_agent.errors import AgentError
from nvir_agent.ingest.watch import FolderStatus
from nvir_agent.model.locate import describe_model_source, resolve_model
from nvir_agent.store import StoreReader, database_path

HEARTBEAT_S = 2.0  # how often a running engine records its snapshot


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
    return problems


def read_status(config: Config, *, stale_after_s: float = 3 * HEARTBEAT_S) -> EngineStatus:
    """The status as another process sees it: store counts plus the running
    agent's last heartbeat (observer modes and health), and the problems found."""
    db = database_path(config)
    configured = [
        FolderStatus(str(config.resolve(f)), "-", False, "not running")
        for f in config.watch.folders
    ]
    if not db.is_file():
        db_error = None
        if not db.parent.is_dir():
            db_error = (f"database folder {db.parent} does not exist: create it or fix "
                        "storage.database")
        return EngineStatus(running=False, database=str(db), folders=configured,
                            model=describe_model_source(config),
                            problems=find_problems(config, db_error))
    try:
        with StoreReader(db) as reader:
            counts = reader.counts()
            beat = reader.heartbeat()
    except AgentError as exc:
        return EngineStatus(running=False, database=str(db), folders=configured,
                            model=describe_model_source(config),
                            problems=find_problems(
                                config, f"database {db} cannot be read: {exc.message}"))
    snap = beat.snapshot if beat else {}
    running = bool(
        beat and snap.get("running") and time.time() - (beat.heartbeat_at or 0) < stale_after_s
    )
    folders = [FolderStatus(**f) for f in snap.get("folders", [])] if running else configured
    return EngineStatus(
        running=running, database=str(db), seen=counts.seen, pending=counts.pending,
        done=counts.done, failed=counts.failed,
        settling=int(snap.get("settling", 0)) if running else 0, folders=folders,
        started_at=beat.started_at if beat else None,
        heartbeat_at=beat.heartbeat_at if beat else None,
        pid=beat.pid if beat else None, error=snap.get("error"),
        paused=bool(snap.get("paused")) if running else False,
        model=describe_model_source(config), problems=find_problems(config),
    )
