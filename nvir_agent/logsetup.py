"""Logging set up by entry points only: stderr, a rotating file in the user log
dir, and an in-memory buffer that a UI can show. Library modules only call
``logging.getLogger(__name__)``."""

from __future__ import annotations

import collections
import logging
import logging.handlers

from nvir_agent.paths import user_log_dir

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class MemoryLogBuffer(logging.Handler):
    """Keeps the last ``capacity`` formatted records for display."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


memory_buffer = MemoryLogBuffer()


def setup_logging(
    *, debug: bool = False, to_file: bool = False, quiet: bool = False, verbose: bool = False
) -> None:
    """Configure the root logger once for a process (``verbose``: INFO lines on stderr)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    stderr = logging.StreamHandler()
    stderr.setFormatter(logging.Formatter(FORMAT if debug or verbose else "%(levelname)s: %(message)s"))
    stderr.setLevel(
        logging.DEBUG if debug
        else logging.ERROR if quiet
        else logging.INFO if verbose
        else logging.WARNING
    )
    root.addHandler(stderr)
    root.addHandler(memory_buffer)
    if to_file:
        log_dir = user_log_dir()
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            fh = logging.handlers.RotatingFileHandler(
                log_dir / "nvir-agent.log", maxBytes=5_000_000, backupCount=5, encoding="utf-8",
                errors="backslashreplace",  # a message can never break the log
            )
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "Cannot write the log file in %s (%s); logging to the console only.",
                log_dir, exc,
            )
        else:
            fh.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(fh)
    for noisy in ("watchdog", "PIL", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
