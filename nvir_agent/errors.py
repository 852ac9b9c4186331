"""Every error the agent reports to a person derives from AgentError.

An AgentError carries a message a lab user can act on: what went wrong, which
file or setting, and what to do about it. Lower-level errors (OSError,
sqlite3, OpenCV, torch) are converted at the boundary with ``raise ... from``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def listing(items: Sequence[str], limit: int = 8, sep: str = ", ") -> str:
    """The first ``limit`` items of a list for a message, then how many more there are."""
    shown = sep.join(items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "")


class AgentError(Exception):
    """Root of all errors shown to users.

    ``message`` says what happened (naming the file or setting), ``hint`` says
    what to do. The command line decides the exit status from the class
    (see ``nvir_agent.cli.main``).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self) -> tuple:
        # message and hint survive pickling (an error raised in a worker process)
        return (self.__class__, (self.message, self.hint))

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  → {self.hint}"
        return self.message


class UsageError(AgentError):
    """Wrong command-line use; raised by the command line only."""


class ConfigError(AgentError):
    """A setting is wrong: agent.toml is unreadable or holds a wrong value, or
    settings conflict (another agent on the same database, training options)."""


class NamingError(AgentError):
    """A file name matches no naming preset nor the configured regex."""


class StoreError(AgentError):
    """The database cannot be opened, migrated or written."""


class ImageError(AgentError):
    """A per-image problem: recorded on that image, the agent carries on."""


class ImageReadError(ImageError):
    """The file is not a readable image (corrupt, truncated, too large, unknown format)."""


class AnalysisError(ImageError):
    """An image was read but could not be analysed (e.g. no spheroid to score)."""


class ModelLoadError(AgentError):
    """A model file is missing, corrupt, truncated or of the wrong kind."""


class PlateMapError(AgentError):
    """A plate map file is malformed."""


class DataError(AgentError):
    """Input a person gave is unusable or names nothing: files and folders,
    training labels, compound tables, values for synthetic images, alert IDs."""


class TrainingInterrupted(AgentError):
    """Training stopped before the end; the resume checkpoint holds the last epoch."""


def read_text_file(path: str | os.PathLike[str], what: str, error: type[AgentError], *,
                   missing_hint: str, format_hint: str, encoding: str = "utf-8") -> str:
    """The whole of a text file the user named, or ``error`` saying that the ``what``
    (e.g. "Plate map") is missing (``missing_hint``: where to point instead), not
    UTF-8 text (``format_hint``: what a good file is) or unreadable."""
    p = Path(path)
    try:
        return p.read_text(encoding=encoding)
    except FileNotFoundError as exc:
        raise error(f"{what} {p} does not exist.", missing_hint) from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {p} is not UTF-8 text.", format_hint) from exc
    except OSError as exc:
        raise error(f"Cannot read {what.lower()} {p}: {exc.strerror or exc}.",
                    "Check that the file exists and that you may read it.") from exc
