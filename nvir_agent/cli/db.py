"""Store commands: `db migrate` (create or upgrade the store's tables)."""

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


def cmd_migrate(args: argparse.Namespace) -> int:
    from nvir_agent.store import Store, database_url, redact

    url = args.to or database_url(load_config(args.config, check_folders=False))
    with Store(url) as store:
        version = store.schema_version()
    print(f"{redact(url)}: schema version {version}")
    return 0
