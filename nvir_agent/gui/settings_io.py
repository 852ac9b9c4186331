"""Read and write the common keys of agent.toml, keeping the user's comments
(tomlkit), validated by the same code that loads the config (no Qt)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from nvir_agent.config import Config, config_from_dict
from nvir_agent.errors import ConfigError

# keys that need the engine restarted (all of the common ones do, today)
RESTART_KEYS = ("watch.folders", "watch.naming", "model.path", "notify.urls")


@dataclass
class CommonSettings:
    """The keys the Settings… dialog edits."""

    folders: list[str] = field(default_factory=list)
    naming: str = "auto"
    model_path: str = ""
    threshold: float = 0.7
    critical: float = 0.4
    urls: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, c: Config) -> CommonSettings:
        return cls(list(c.watch.folders), c.watch.naming, c.model.path, c.alerts.threshold,
                   c.alerts.critical, list(c.notify.urls))


def load_document(path: str | os.PathLike[str]) -> tomlkit.TOMLDocument:
    p = Path(path)
    if not p.is_file():
        return tomlkit.document()
    try:
        return tomlkit.parse(p.read_text(encoding="utf-8"))
    except (OSError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(f"Cannot read {p}: {exc}.", "Fix the file or choose another.") from exc


def _table(doc: tomlkit.TOMLDocument, name: str) -> Table:
    if name not in doc:
        doc.add(name, tomlkit.table())
    return doc[name]  # type: ignore[return-value]


def _set(table: Table, key: str, value: Any, default: Any) -> None:
    """Set a key; a key still at its default and absent from the file stays absent."""
    if key not in table and value == default:
        return
    if key in table and table[key] == value:
        return  # unchanged: keep its formatting and comment
    table[key] = value


def apply(doc: tomlkit.TOMLDocument, s: CommonSettings) -> tomlkit.TOMLDocument:
    """Write the settings into the document, touching only changed keys."""
    d = CommonSettings()
    for section, key, value, default in (
        ("watch", "folders", s.folders, d.folders), ("watch", "naming", s.naming, d.naming),
        ("model", "path", s.model_path, d.model_path),
        ("alerts", "threshold", s.threshold, d.threshold),
        ("alerts", "critical", s.critical, d.critical), ("notify", "urls", s.urls, d.urls),
    ):
        if section not in doc and value == default:
            continue
        _set(_table(doc, section), key, value, default)
    return doc


def validate(doc: tomlkit.TOMLDocument, source: Path | None) -> Config:
    """The config the document would load as (ConfigError with the fix when invalid)."""
    return config_from_dict(doc.unwrap(), source=source, check_folders=True)


def save(doc: tomlkit.TOMLDocument, path: str | os.PathLike[str]) -> Path:
    """Write atomically (a half-written agent.toml would stop the agent)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    try:
        tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
        os.replace(tmp, p)
    except OSError as exc:
        raise ConfigError(f"Cannot write {p}: {exc.strerror or exc}.",
                          "Check that the folder is writable.") from exc
    return p


def changed_keys(old: CommonSettings, new: CommonSettings) -> list[str]:
    names = {"folders": "watch.folders", "naming": "watch.naming", "model_path": "model.path",
             "threshold": "alerts.threshold", "critical": "alerts.critical",
             "urls": "notify.urls"}
    return [names[k] for k in names if getattr(old, k) != getattr(new, k)]
