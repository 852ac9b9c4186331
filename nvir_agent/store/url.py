"""Where the store lives and who this agent is: ``[storage] url`` (``sqlite:///path``
or ``postgresql://user@host:port/db``), the station name, and the password kept
out of sight.

Passwords never come from agent.toml: libpq reads ``PGPASSWORD`` and the
``.pgpass`` file (``PGPASSFILE``) itself; ``NVIR_AGENT_DB_PASSWORD`` and the OS
keyring (service ``nvir-agent``, user ``user@host:port/db``) are tried before
it gives up. TLS settings (``sslmode``, ``sslrootcert``, ``sslcert``,
``sslkey``…) are passed through from the URL's query or the ``PGSSL*``
variables. Every URL shown in a log line or message goes through
:func:`redact` first.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from nvir_agent.errors import ConfigError
from nvir_agent.paths import default_database, user_data_dir

if TYPE_CHECKING:
    from nvir_agent.config import Config

PASSWORD_ENV = "NVIR_AGENT_DB_PASSWORD"
KEYRING_SERVICE = "nvir-agent"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

Target = str | os.PathLike[str]


def is_postgres(target: Target) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def sqlite_path(target: Target) -> Path:
    """The file of a path or a ``sqlite:///path`` URL."""
    text = os.fspath(target)
    if not text.startswith("sqlite:"):
        return Path(text)
    rest = text[len("sqlite:"):]
    if rest.startswith("//"):
        rest = rest[2:]
    if re.match(r"^/[A-Za-z]:[/\\]", rest) or rest.startswith("//"):
        rest = rest[1:]  # sqlite:///C:/data/x.sqlite3, sqlite:////abs/x.sqlite3
    return Path(unquote(rest)).expanduser()


def store_exists(target: Target) -> bool:
    """Whether there is a store to read at ``target``: a server URL always counts (a
    missing server is reported when it is opened); a SQLite file must exist."""
    return is_postgres(target) or sqlite_path(target).is_file()


def redact(url: Target) -> str:
    """``url`` with any password replaced by ``***`` (for logs and messages); a SQLite
    store as its file path."""
    text = os.fspath(url)
    if not is_postgres(text):
        return str(sqlite_path(text))
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def database_url(config: Config) -> str:
    """``[storage] url``, else ``sqlite:///`` + ``[storage] database`` (relative to the
    config file), else the SQLite file in the user data folder."""
    url = config.storage.url.strip()
    if url:
        if is_postgres(url):
            if urlsplit(url).password:
                raise ConfigError(
                    f"[storage] url holds a password ({redact(url)}).",
                    "Remove it from agent.toml and give it in a .pgpass file, "
                    f"${PASSWORD_ENV} or the OS keyring (see README, Several microscopes).",
                )
            return url
        if url.startswith("sqlite:"):
            return "sqlite:///" + str(config.resolve(str(sqlite_path(url))))
        raise ConfigError(
            f"[storage] url = {url!r} is neither sqlite:///… nor postgresql://….",
            "Use sqlite:///path/to/agent.sqlite3 or postgresql://user@host:5432/nvir.",
        )
    if config.storage.database:
        return "sqlite:///" + str(config.resolve(config.storage.database))
    return "sqlite:///" + str(default_database())


def default_station() -> str:
    """This computer's host name: the station name unless ``[storage] station`` says."""
    return socket.gethostname() or "station"


def station_name(config: Config) -> str:
    """``[storage] station``, else this computer's host name."""
    return config.storage.station.strip() or default_station()


def spool_path(config: Config) -> Path:
    """The local SQLite file a PostgreSQL station writes to while the server is away."""
    if config.storage.spool:
        return config.resolve(config.storage.spool)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", station_name(config))
    return user_data_dir() / f"spool-{safe}.sqlite3"


def keyring_password(url: str) -> str | None:
    """The password the OS keyring holds for this server, when ``keyring`` is installed."""
    try:
        keyring = importlib.import_module("keyring")
    except ImportError:
        return None
    parts = urlsplit(url)
    account = f"{parts.username or ''}@{parts.hostname or ''}:{parts.port or 5432}" \
              f"{parts.path or '/'}"
    try:
        return keyring.get_password(KEYRING_SERVICE, account)
    except Exception:  # a locked or missing keyring backend: fall back to libpq's sources
        return None


def connection_password(url: str) -> str | None:
    """A password to hand to libpq besides its own sources (PGPASSWORD, .pgpass)."""
    if urlsplit(url).password or os.environ.get("PGPASSWORD"):
        return None
    return os.environ.get(PASSWORD_ENV) or keyring_password(url)
