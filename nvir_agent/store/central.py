"""The central store: the writer on a PostgreSQL server shared by several stations.

``Store("postgresql://…")`` gives a :class:`CentralStore`: the same API as
the SQLite writer, on a server connection (see postgres.py for the schema and
the dialect).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from nvir_agent.store import postgres
from nvir_agent.store.database import CLAIM_TIMEOUT_S, Store
from nvir_agent.store.url import redact

log = logging.getLogger(__name__)


class CentralStore(Store):
    """The writer of one station on a PostgreSQL server."""

    _sql = postgres.POSTGRES

    def __init__(self, target: str, *, station: str | None = None,
                 shared_folders: Sequence[str | os.PathLike[str]] = (),
                 claim_timeout_s: float = CLAIM_TIMEOUT_S, **_: Any) -> None:
        self._setup(station, shared_folders, claim_timeout_s)
        self.url = os.fspath(target)
        self.path = redact(self.url)
        self._conn = postgres.connect(self.url)
        try:
            with self._lock:
                postgres.migrate(self._conn, self.url)
        except BaseException:
            self._conn.close()
            raise
