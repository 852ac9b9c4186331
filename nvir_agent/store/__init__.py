"""The store: the agent's only shared state (SQLite today).

Every SQL statement of the agent lives in this package. Other packages use
this API only:

- :class:`Store` — the engine's writer (jobs, results, heartbeat) and
  ``Store.transaction()``, which yields a :class:`Transaction` for the
  monitor's writes (plate maps, alert rows) together with any reads;
- :class:`StoreReader` — a read-only connection for the CLI, the report and
  the UI; :func:`open_reader` takes a store, a reader or a database path;
- the typed rows in :mod:`nvir_agent.store.rows`.
"""

from nvir_agent.store.database import Store, database_path
from nvir_agent.store.reads import Reads, StoreReader, open_reader
from nvir_agent.store.rows import (
    ACTIVE_STATES,
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
    Trust,
)
from nvir_agent.store.schema import MIGRATIONS, to_json
from nvir_agent.store.writes import Transaction

__all__ = [
    "ACTIVE_STATES", "CLOSED_STATES", "MIGRATIONS", "SEVERITY_RANK", "Alert", "AlertEvent",
    "Counts", "Heartbeat", "ImageRecord", "ImageScore", "ImageStateSummary", "Key",
    "Measurement", "MeasurementRow", "PlateRow", "Reads", "Result", "Store", "StoreReader",
    "Transaction", "Trust", "UNLIKE_TRAINING", "database_path", "open_reader", "to_json",
]
