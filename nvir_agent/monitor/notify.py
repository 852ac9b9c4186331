"""Notifications: one Notifier, several sinks.

Sinks: the log (always; shown on the console unless ``notify.console`` is
false), the tray (handed to :func:`build_notifier` by the UI), and optional e-mail/Teams/Slack/… channels through apprise URLs
(``notify.urls``; ``pip install nvir-agent[notify]``).

The Notifier coalesces: at most one notification per ``notify.min_interval_s``,
summarising everything that happened in between. A failing sink is retried
with exponential back-off (capped at ``notify.retry_max_s``) and logged; it
never blocks or stops the engine. Sending happens on one worker thread that
starts with the first notice and stops in :meth:`Notifier.close`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nvir_agent.config import NotifyConfig
from nvir_agent.errors import AgentError, ConfigError
from nvir_agent.store.rows import SEVERITY_RANK

log = logging.getLogger(__name__)

MAX_LINES = 20
MAX_ATTEMPTS = 8


class NotifyError(AgentError):
    """A notification channel failed to deliver."""


@dataclass(frozen=True)
class Notice:
    """One thing worth telling the operator (an alert opened or escalated)."""

    title: str
    body: str
    severity: str = "warning"  # info | warning | critical
    plate: str | None = None
    alert_id: int | None = None
    kind: str = "opened"


@dataclass(frozen=True)
class Message:
    """What a sink delivers: a coalesced summary of one or more notices."""

    title: str
    body: str
    severity: str
    notices: tuple[Notice, ...] = ()


class Sink(Protocol):
    """A delivery channel. ``send`` raises (any Exception) when delivery failed."""

    name: str

    def send(self, message: Message) -> None: ...


def summarise(notices: Sequence[Notice]) -> Message:
    """One message for several notices: a count in the title, one line each."""
    if not notices:
        raise ValueError("nothing to summarise")
    latest: dict[object, Notice] = {}
    for i, n in enumerate(notices):  # an alert opened and escalated in one window: say it once
        latest.pop(n.alert_id if n.alert_id is not None else ("notice", i), None)
        latest[n.alert_id if n.alert_id is not None else ("notice", i)] = n
    notices = list(latest.values())
    severity = max((n.severity for n in notices), key=lambda s: SEVERITY_RANK.get(s, 0))
    if len(notices) == 1:
        n = notices[0]
        return Message(n.title, n.body, n.severity, (n,))
    counts: dict[str, int] = {}
    for n in notices:
        counts[n.severity] = counts.get(n.severity, 0) + 1
    parts = ", ".join(f"{counts[s]} {s}" for s in ("critical", "warning", "info") if s in counts)
    plates = sorted({n.plate for n in notices if n.plate})
    title = f"NViR Agent: {len(notices)} alerts ({parts})" + (
        f" on {', '.join(plates[:3])}{' …' if len(plates) > 3 else ''}" if plates else "")
    lines = [f"[{n.severity}] {n.body}" for n in notices[:MAX_LINES]]
    if len(notices) > MAX_LINES:
        lines.append(f"… and {len(notices) - MAX_LINES} more (`nvir-agent alerts` lists them)")
    return Message(title, "\n".join(lines), severity, tuple(notices))


class LogSink:
    """Writes each message to the log (WARNING, so the console shows it)."""

    name = "log"

    def __init__(self, console: bool = True) -> None:
        self.level = logging.WARNING if console else logging.INFO

    def send(self, message: Message) -> None:
        level = logging.ERROR if message.severity == "critical" else self.level
        if message.severity == "info":
            level = min(level, logging.WARNING)
        log.log(level, "%s\n%s", message.title, message.body)


class AppriseSink:
    """E-mail, Teams, Slack, … through apprise URLs (an optional extra)."""

    name = "apprise"
    _TYPES = {"info": "info", "warning": "warning", "critical": "failure"}

    def __init__(self, urls: Sequence[str]) -> None:
        try:
            import apprise  # optional extra, imported only when channels are configured
        except ImportError as exc:
            raise ConfigError(
                "notify.urls is set but the apprise library is not installed.",
                "Install the channel support with `pip install 'nvir-agent[notify]'`, "
                "or remove notify.urls.",
            ) from exc
        self._apprise = apprise.Apprise()
        for url in urls:
            if not self._apprise.add(url):
                shown = url.split("://", 1)[0] + "://…" if "://" in url else url
                raise ConfigError(
                    f"notify.urls: '{shown}' is not a notification URL apprise understands.",
                    "See https://github.com/caronc/apprise/wiki for URL forms "
                    "(e.g. mailtos://user:pass@example.com, msteams://…, slack://…).",
                )

    def send(self, message: Message) -> None:
        ok = self._apprise.notify(body=message.body, title=message.title,
                                  notify_type=self._TYPES.get(message.severity, "info"))
        if not ok:
            raise NotifyError("a notification channel did not accept the message")


@dataclass
class _Retry:
    message: Message
    attempt: int
    due: float


class Notifier:
    """Coalesces notices and sends them to every sink from one worker thread."""

    def __init__(self, sinks: Sequence[Sink], *, min_interval_s: float = 60.0,
                 retry_base_s: float = 2.0, retry_max_s: float = 600.0,
                 max_attempts: int = MAX_ATTEMPTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.min_interval_s = min_interval_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.max_attempts = max_attempts
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: list[Notice] = []
        self._retries: dict[int, _Retry] = {}  # index in self.sinks → retry
        self._last_sent: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.sent: int = 0  # messages handed to sinks (for status)

    def add_sink(self, sink: Sink) -> None:
        with self._cond:
            self.sinks.append(sink)

    def submit(self, notices: Sequence[Notice]) -> None:
        """Queue notices; never blocks on delivery."""
        if not notices:
            return
        with self._cond:
            if self._stopping:
                log.warning("notifier closed; %d notice(s) only logged", len(notices))
                LogSink().send(summarise(notices))
                return
            self._pending.extend(notices)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nvir-notify",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is pending (one attempt), then stop the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("notification channels still busy after %.0f s", timeout)

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- worker

    def _next_due(self) -> float | None:
        dues = [r.due for r in self._retries.values()]
        if self._pending:
            dues.append(self._last_sent + self.min_interval_s
                        if self._last_sent is not None else self._clock())
        return min(dues) if dues else None

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    due = self._next_due()
                    now = self._clock()
                    if self._stopping or (due is not None and due <= now):
                        break
                    self._cond.wait(None if due is None else due - now)
                final = self._stopping
                now = self._clock()
                batch: list[tuple[int, Sink, Message, int]] = []
                for i, r in list(self._retries.items()):
                    if final or r.due <= now:
                        batch.append((i, self.sinks[i], r.message, r.attempt))
                        del self._retries[i]
                if self._pending and (final or self._last_sent is None
                                      or now >= self._last_sent + self.min_interval_s):
                    message = summarise(self._pending)
                    self._pending = []
                    self._last_sent = now
                    for i, sink in enumerate(self.sinks):
                        queued = [b for b in batch if b[0] == i]
                        if queued:  # a retry is due too: send one merged message
                            batch.remove(queued[0])
                            message_i = summarise(list(queued[0][2].notices) + list(message.notices))
                            batch.append((i, sink, message_i, queued[0][3]))
                        else:
                            batch.append((i, sink, message, 0))
            for i, sink, message, attempt in batch:
                self._deliver(i, sink, message, attempt, final)
            if final:
                return

    def _deliver(self, i: int, sink: Sink, message: Message, attempt: int, final: bool) -> None:
        try:
            sink.send(message)
            self.sent += 1
            if attempt:
                log.info("notification channel %s delivered after %d retries", sink.name, attempt)
            return
        except Exception as exc:  # any channel failure is logged, never raised
            error: Any = exc
        attempt += 1
        if final or attempt >= self.max_attempts:
            log.error("notification channel %s failed %d time(s), giving up on '%s': %s",
                      sink.name, attempt, message.title, error)
            return
        delay = min(self.retry_base_s * 2 ** (attempt - 1), self.retry_max_s)
        log.warning("notification channel %s failed (%s); retrying in %.0f s",
                    sink.name, error, delay)
        with self._cond:
            old = self._retries.get(i)
            if old is not None:  # a newer message failed too: keep both in one retry
                message = summarise(list(old.message.notices) + list(message.notices))
            self._retries[i] = _Retry(message, attempt, self._clock() + delay)
            self._cond.notify_all()


def build_notifier(config: NotifyConfig, sinks: Sequence[Sink] = ()) -> Notifier:
    """The notifier for this config: the log sink, the apprise channels, then the
    given ``sinks`` (a sink named ``tray`` only while ``notify.tray`` is on)."""
    channels: list[Sink] = [LogSink(console=config.console)]
    if config.urls:
        channels.append(AppriseSink(config.urls))
    channels += [s for s in sinks if config.tray or s.name != "tray"]
    return Notifier(channels, min_interval_s=config.min_interval_s,
                    retry_max_s=config.retry_max_s)
