"""agent.toml: typed defaults in one place, loading and validation.

Every key has a default here; ``agent.toml.example`` documents each one.
Errors name the file, the key and the fix (``ConfigError``, exit code 2).
Nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvir_agent.errors import ConfigError, read_text_file
from nvir_agent.ingest.filenames import PRESET_NAMES
from nvir_agent.paths import user_config_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_ENV = "NVIR_AGENT_CONFIG"
CONFIG_NAME = "agent.toml"


@dataclass
class WatchConfig:
    folders: list[str] = field(default_factory=list)
    patterns: list[str] = field(
        default_factory=lambda: ["*.tif", "*.tiff", "*.png", "*.jpg", "*.jpeg", "*.bmp"]
    )
    ignore: list[str] = field(default_factory=lambda: ["*_thumb*", "~$*", "*.tmp", "*.part", ".*"])
    naming: str = "auto"
    regex: str = ""
    observer: str = "auto"  # auto | native | polling
    settle_s: float = 2.0
    rescan_interval_s: float = 300.0
    poll_interval_s: float = 5.0
    recursive: bool = True
    follow_links_outside: bool = False


@dataclass
class StorageConfig:
    database: str = ""  # empty: <user data dir>/nvir-agent.sqlite3
    url: str = ""  # sqlite:///path or postgresql://user@host:port/db (overrides database)
    station: str = ""  # this agent's name in a shared store; empty: the host name
    shared_folders: list[str] = field(default_factory=list)  # watched by several stations
    claim_timeout_s: float = 600.0  # a silent station's claimed jobs are taken over after
    spool: str = ""  # SQLite file used while the server is away; empty: user data dir
    retry_s: float = 15.0  # how often to try the server again while spooling


@dataclass
class ImagingConfig:
    max_pixels_side: int = 20000
    page: int = 0
    pixel_size_um: float = 0.0  # 0: unknown unless the TIFF says
    thumbnails: bool = True  # previews for the review window, in the user cache folder
    workers: int = 0  # processes that read and segment; 0: one per core given ([model] threads)


@dataclass
class ModelConfig:
    path: str = ""  # empty: the bundled demo model (with a warning)
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # cores of the watching agent (workers; scoring a third beside them); 0: all but one
    one_shot_threads: int = 0  # score, process, evaluate, bench; 0: all cores
    batch_size: int = 8  # images committed together; the network's own batch is measured
    fast_path: str = "auto"  # auto | fp32 | fp32-cl | onnx | openvino | bf16 | … (see FAST_PATHS)
    low_priority: bool = True
    enabled: bool = True


@dataclass
class PlatesConfig:
    maps: str = ""  # folder of plate maps or one file
    format: int = 96
    read_gap_s: float = 900.0  # images further apart than this start a new plate read


@dataclass
class AlertsConfig:
    threshold: float = 0.7
    critical: float = 0.4
    drop: float = 0.3
    confirm: int = 2
    hysteresis: float = 0.05
    min_controls: int = 3
    control_cv: float = 0.2
    control_drop: float = 0.3
    qc_fail_fraction: float = 0.25
    qc_ignore: list[str] = field(default_factory=list)  # QC flags that do not disqualify a well
    enabled: bool = True
    # acquisition stalled: no image for this many of the plate's read intervals (0: off) …
    stall_after: float = 1.5
    # … until this many intervals, after which the plate counts as finished
    stall_give_up: float = 4.0


@dataclass
class NotifyConfig:
    urls: list[str] = field(default_factory=list)
    min_interval_s: float = 60.0
    console: bool = True
    tray: bool = True
    retry_max_s: float = 600.0


@dataclass
class Config:
    watch: WatchConfig = field(default_factory=WatchConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    plates: PlatesConfig = field(default_factory=PlatesConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: Path | None = None  # the file it was read from, None for defaults

    def resolve(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(os.path.expandvars(value)).expanduser()
        if not p.is_absolute() and self.source is not None:
            p = self.source.parent / p
        return p


SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[f.type]  # type: ignore[misc]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}

_CHOICES = {
    ("watch", "observer"): ("auto", "native", "polling"),
    ("watch", "naming"): PRESET_NAMES,
    ("model", "device"): ("auto", "cpu", "cuda", "mps"),
    ("model", "fast_path"): (
        "auto", "fp32", "fp32-cl", "onnx", "openvino", "compile", "bf16", "bf16-weights",
        "bf16-encoder", "bf16-inner", "openvino-bf16", "fp16", "tf32",
    ),
    ("plates", "format"): (96, 384, 1536),
}


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """--config, else $NVIR_AGENT_CONFIG, else the user config dir; None when absent."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"Config file {p} does not exist.",
                "Check the path given with --config, or copy agent.toml.example there.",
            )
        return p
    env = os.environ.get(CONFIG_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"Config file {p} (from ${CONFIG_ENV}) does not exist.",
                f"Point ${CONFIG_ENV} at an existing agent.toml or unset it.",
            )
        return p
    p = user_config_dir() / CONFIG_NAME
    return p if p.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None = None, *, check_folders: bool = True
) -> Config:
    """Load and validate agent.toml (see find_config_path); defaults when none exists."""
    found = find_config_path(path)
    if found is None:
        return Config()
    text = read_text_file(found, "Config file", ConfigError,
                          missing_hint="Check the path given with --config, or copy "
                          "agent.toml.example there.",
                          format_hint="Save it as UTF-8 text.")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Config file {found} is not valid TOML: {exc}.",
            "Fix the line named above; agent.toml.example shows the expected form.",
        ) from exc
    except RecursionError as exc:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(
            f"Config file {found} nests arrays or tables too deeply to be an agent.toml.",
            "Start again from agent.toml.example.",
        ) from exc
    return config_from_dict(raw, source=found.absolute(), check_folders=check_folders)


def config_from_dict(
    raw: dict[str, Any], *, source: Path | None = None, check_folders: bool = True
) -> Config:
    """Build a validated Config from parsed TOML."""
    where = str(source) if source else "config"
    cfg = Config(source=source)
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{name}].",
                f"Known sections: {', '.join('[' + s + ']' for s in SECTIONS)}.",
            )
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: '{name}' must be a section ([{name}]), not a single value.",
                f"Write it as [{name}] followed by its keys.",
            )
        setattr(cfg, name, _section(name, value, where))
    _validate(cfg, where, check_folders)
    return cfg


def _section(name: str, values: dict[str, Any], where: str) -> Any:
    cls = SECTIONS[name]
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key '{key}' in [{name}].",
                f"Known keys in [{name}]: {', '.join(sorted(known))}.",
            )
        kwargs[key] = _coerce(value, hints[key], f"{name}.{key}", where)
        choices = _CHOICES.get((name, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(
                f"{where}: {name}.{key} = {value!r} is not allowed.",
                f"Use one of: {', '.join(map(repr, choices))}.",
            )
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {str: "text", int: "a whole number", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(
            f"{where}: {key} must be {_type_name(tp)}, not {value!r}.",
            "See agent.toml.example for the expected form.",
        )

    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise bad()
        inner = typing.get_args(tp)[0]
        return [_coerce(v, inner, key, where) for v in value]
    if isinstance(tp, types.UnionType):
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise bad()  # pragma: no cover - every declared type is handled above


def _validate(cfg: Config, where: str, check_folders: bool) -> None:
    def positive(section: str, key: str, allow_zero: bool = False) -> None:
        v = getattr(getattr(cfg, section), key)
        if v < 0 or (v == 0 and not allow_zero):
            raise ConfigError(
                f"{where}: {section}.{key} = {v} must be {'≥ 0' if allow_zero else '> 0'}.",
                "See agent.toml.example for sensible values.",
            )

    positive("watch", "settle_s", allow_zero=True)
    positive("watch", "rescan_interval_s", allow_zero=True)
    positive("watch", "poll_interval_s")
    positive("imaging", "max_pixels_side")
    positive("imaging", "pixel_size_um", allow_zero=True)
    positive("imaging", "workers", allow_zero=True)
    positive("model", "threads", allow_zero=True)
    positive("model", "one_shot_threads", allow_zero=True)
    positive("model", "batch_size")
    positive("alerts", "confirm")
    positive("alerts", "min_controls")
    positive("alerts", "stall_after", allow_zero=True)
    positive("alerts", "stall_give_up", allow_zero=True)
    positive("notify", "min_interval_s", allow_zero=True)
    positive("plates", "read_gap_s")
    positive("storage", "claim_timeout_s")
    positive("storage", "retry_s")
    for key in ("threshold", "critical", "drop", "hysteresis", "control_cv",
                "control_drop", "qc_fail_fraction"):
        v = getattr(cfg.alerts, key)
        if not 0 <= v <= 1.5:
            raise ConfigError(
                f"{where}: alerts.{key} = {v} is outside 0–1.5 (a fraction of control).",
                "Use e.g. 0.7 for 70 % of the vehicle-control viability.",
            )
    if cfg.alerts.critical > cfg.alerts.threshold:
        raise ConfigError(
            f"{where}: alerts.critical ({cfg.alerts.critical}) is above alerts.threshold "
            f"({cfg.alerts.threshold}).",
            "The critical level must be the lower of the two (e.g. 0.4 and 0.7).",
        )
    if cfg.watch.regex:
        try:
            rx = re.compile(cfg.watch.regex)
        except re.error as exc:
            raise ConfigError(
                f"{where}: watch.regex is not a valid regular expression: {exc}.",
                "Fix the pattern; use named groups such as (?P<well>[A-P]\\d{2}).",
            ) from exc
        if "well" not in rx.groupindex and not {"row", "column"} <= set(rx.groupindex):
            raise ConfigError(
                f"{where}: watch.regex has no named group 'well' (nor 'row' and 'column').",
                "Add (?P<well>...) around the part of the file name that gives the well.",
            )
    elif cfg.watch.naming == "regex":
        raise ConfigError(
            f"{where}: watch.naming is 'regex' but watch.regex is empty.",
            "Give watch.regex with named groups such as (?P<well>[A-P]\\d{2}), "
            "or pick a preset for watch.naming.",
        )
    if check_folders:
        for folder in cfg.watch.folders:
            p = cfg.resolve(folder)
            if not p.is_dir():
                raise ConfigError(
                    f"{where}: watch.folders lists {folder!r}, which is not an existing folder"
                    f" ({p}).",
                    "Create the folder, fix its path, or remove it from the list.",
                )


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def use_all_cores(cfg: Config) -> Config:
    """Settings for a one-shot command (score, process, evaluate, bench): score with
    ``[model] one_shot_threads`` (0: every core) at normal priority, rather than the
    watching agent's all-but-one core at low priority. Changes ``cfg`` and returns it."""
    cfg.model.threads = cfg.model.one_shot_threads or cpu_cores()
    cfg.model.low_priority = False
    return cfg
