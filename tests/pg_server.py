"""A throwaway PostgreSQL server for the tests (a real server, no mocks).

Started once per test session in a temporary folder with Debian's
``postgresql`` binaries (``initdb`` / ``pg_ctl``). PostgreSQL refuses to run as
root, so as root the server runs as the unprivileged ``postgres`` user (or
``nobody``) through ``runuser``/``setpriv``. Each test gets a database of its
own on it. Tests that need it are skipped when no PostgreSQL is installed
(CI installs it: ``installer/setup.sh --test``), unless ``NVIR_REQUIRE_POSTGRES``
is set, when they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from core_helpers import wait_until

USER = "nvir"


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner() -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs as an unprivileged user (empty when not root)."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], pw.pw_uid, pw.pw_gid
        return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"], \
            pw.pw_uid, pw.pw_gid
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run "
                       "PostgreSQL as")


class PgServer:
    """initdb + pg_ctl in a temporary folder; ``url(db)`` gives a connection string."""

    def __init__(self) -> None:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.prefix, uid, gid = _runner()
        self.root = Path(tempfile.mkdtemp(prefix="nvir-pg-"))
        os.chmod(self.root, 0o700)
        if uid is not None:
            os.chown(self.root, uid, gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._dbs = itertools.count(1)
        self._run([self.initdb, "-D", str(self.data), "-U", USER, "-A", "trust",
                   "--no-sync", "-E", "UTF8", "--locale=C"])
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                     f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                     "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
        self.start()

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *cmd], capture_output=True, text=True,
                              check=check, timeout=120)

    def start(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
                  check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._dbs)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(predicate, timeout: float = 30.0, step: float = 0.1) -> bool:
    return wait_until(predicate, timeout=timeout, step=step)
