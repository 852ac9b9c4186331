"""The store: the agent's only shared state (SQLite, or PostgreSQL for several stations).

Every SQL statement of the agent lives in this package. Other packages use
this API only:

- :class:`Store` — the engine's writer (jobs, results, heartbeat) and
  ``Store.transaction()``, which yields a :class:`Transaction` for the
  monitor's writes (plate maps, alert rows) together with any reads;
- :class:`StoreReader` — a read-only connection for the CLI, the report and
  the UI; :func:`open_reader` takes a store, a reader or a database path;
- the typed rows in :mod:`nvir_agent.store.rows`;
- :func:`database_url` and :func:`store_options`: where ``[storage]`` puts the
  store and who this station is (``Store(database_url(c), **store_options(c))``).

Both take a path, a ``sqlite:///`` URL or a ``postgresql://`` URL; for the
latter they return the PostgreSQL implementation of the same API.
"""

from nvir_agent.store.database import Store, database_path, store_options
from nvir_agent.store.dialect import StoreBusy, StoreFull, StoreOffline, StoreUnavailable
from nvir_agent.store.integrity import DamagedDatabase, set_aside, write_locked
from nvir_agent.store.reads import Reads, StoreReader, open_reader
from nvir_agent.store.rows import (
    ACTIVE_STATES,
    AWAITING_MODEL,
    CLOSED_STATES,
    SEVERITY_RANK,
    UNLIKE_TRAINING,
    Alert,
    AlertEvent,
    Counts,
    Heartbeat,
    ImageRecord,
    ImageScore,
    ImageStateSummary,
    Key,
    Measurement,
    MeasurementRow,
    PlateRow,
    Result,
    Shelf,
    StationRow,
    Trust,
)
from nvir_agent.store.schema import MIGRATIONS, to_json
from nvir_agent.store.url import database_url, redact, station_name, store_exists
from nvir_agent.store.writes import Transaction

__all__ = [
    "ACTIVE_STATES", "AWAITING_MODEL", "CLOSED_STATES", "MIGRATIONS", "SEVERITY_RANK", "Alert", "AlertEvent",
    "Counts", "DamagedDatabase", "Heartbeat", "ImageRecord", "ImageScore", "ImageStateSummary", "Key",
    "Measurement", "MeasurementRow", "PlateRow", "Shelf", "Reads", "Result", "StationRow", "Store",
    "StoreBusy", "StoreFull", "StoreOffline", "StoreReader", "StoreUnavailable", "Transaction", "database_path", "database_url", "open_reader", "redact", "store_exists",
    "set_aside", "station_name", "store_options", "to_json", "write_locked",
    "Trust", "UNLIKE_TRAINING",
]
