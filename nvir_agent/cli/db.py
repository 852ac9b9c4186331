"""Store commands: `db migrate` (create or upgrade the store's tables) and `db copy`
(bring a station's history into another store, e.g. the central server)."""

from __future__ import annotations

import argparse

from nvir_agent.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="the store: create or upgrade its tables")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = dbsub.add_parser("migrate", help="create or upgrade the store's tables (run as the "
                         "database owner on a PostgreSQL server)")
    m.add_argument("--to", metavar="URL", help="sqlite:///path or postgresql://user@host/db "
                   "(default: [storage] url or database of agent.toml)")
    m.set_defaults(func=cmd_migrate)
    c = dbsub.add_parser(
        "copy", help="copy a store's images, measurements, plate maps and alerts into "
        "another (e.g. a station's SQLite file into the central server); safe to repeat")
    c.add_argument("--from", dest="source", metavar="URL", required=True,
                   help="the store to copy from (a SQLite file or sqlite:///path)")
    c.add_argument("--to", metavar="URL",
                   help="the store to copy into (default: [storage] url of agent.toml)")
    c.add_argument("--station", metavar="NAME",
                   help="the station the copied images belong to (default: [storage] "
                        "station, else this computer's name)")
    c.set_defaults(func=cmd_copy)


def cmd_migrate(args: argparse.Namespace) -> int:
    from nvir_agent.store import Store, database_url, redact

    url = args.to or database_url(load_config(args.config, check_folders=False))
    with Store(url) as store:
        version = store.schema_version()
    print(f"{redact(url)}: schema version {version}")
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    from nvir_agent.errors import DataError
    from nvir_agent.store import Store, database_url, redact, station_name, store_exists
    from nvir_agent.store.transfer import copy_store

    config = load_config(args.config, check_folders=False)
    target = args.to or database_url(config)
    if not store_exists(args.source):
        raise DataError(f"There is no database at {redact(args.source)} to copy from.",
                        "Give the station's database file with --from.")
    if redact(args.source) == redact(target):
        raise DataError("--from and --to name the same store.", "Copy into another store.")
    station = args.station or station_name(config)
    with Store(args.source, station=station) as source, \
            Store(target, station=station) as dest:
        report = copy_store(source, dest)
    print(f"{redact(args.source)} → {redact(target)} (station {station}): "
          f"{report.images} images copied, {report.images_kept} already there; "
          f"{report.plate_maps} plate maps; {report.alerts} alerts copied, "
          f"{report.alerts_kept} already there")
    return 0
