"""Shared fixtures. Every test fails if it leaves a thread running."""

from __future__ import annotations

import os
import threading
import time

import pytest
from pg_server import PgServer

# Qt widgets in tests draw off screen (no display needed)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [
            t for t in threading.enumerate()
            if t not in before and t.is_alive() and not getattr(t, "_nvir_allowed", False)
            and not t.name.startswith(("QThread", "Dummy-", "asyncio_"))
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Keep config, data, logs and cache of every test in its own temp folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("NVIR_AGENT_CONFIG", raising=False)
    return home


@pytest.fixture
def gui_store(tmp_path):
    """A small real store for the GUI tests (see gui_helpers.build_store)."""
    from gui_helpers import build_store

    return build_store(tmp_path)


@pytest.fixture
def no_leaked_workers(qtbot):
    """Fail a test whose GUI background jobs are still running or undelivered at its end."""
    from nvir_agent.gui import workers

    yield
    assert workers.wait_for_workers(10000), "GUI worker threads still running"
    qtbot.waitUntil(lambda: workers.jobs_in_flight() == 0, timeout=20000)


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the session (see tests/pg_server.py)."""
    try:
        server = PgServer()
    except FileNotFoundError as exc:
        if os.environ.get("NVIR_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"no PostgreSQL server to test against: {exc}")
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server):
    """A fresh database on the session's PostgreSQL server."""
    return pg_server.new_database()


@pytest.fixture
def fp32_measured_slowest(monkeypatch):
    """The fast-path choice sees fp32 eager as slower than any option, so that a test
    gets the path it names whatever the load on the machine (accuracy is still checked)."""
    from nvir_agent.model import fastpath

    real = fastpath.measure

    def measure(candidate, x, repeats=2):
        speed, out = real(candidate, x, repeats)
        return (1e-9 if candidate.name == "fp32" else speed), out

    monkeypatch.setattr(fastpath, "measure", measure)
