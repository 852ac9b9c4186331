"""Notifier: coalescing, retry with back-off, apprise channel (local test scheme,
no network), sink registration; no thread may outlive close()."""

from __future__ import annotations

import logging
import threading
import time

import apprise
import pytest
from apprise.decorators import notify as apprise_notify

from nvir_agent.config import NotifyConfig
from nvir_agent.errors import ConfigError
from nvir_agent.monitor.notify import (
    AppriseSink,
    LogSink,
    Message,
    Notice,
    Notifier,
    build_notifier,
    summarise,
)

RECEIVED: list[tuple[str, str, str]] = []
FAIL_NEXT = {"count": 0}


@apprise_notify(on="nvirtest")
def _nvirtest_channel(body, title, notify_type, *args, **kwargs):
    """A local apprise channel: records what it is given, fails when told to."""
    if FAIL_NEXT["count"] > 0:
        FAIL_NEXT["count"] -= 1
        return False
    RECEIVED.append((title, body, str(notify_type)))
    return True


@pytest.fixture(scope="module", autouse=True)
def apprise_pool_started():
    """apprise 2 delivers on its own process-wide thread pool, created on first
    use and kept for the life of the process; start it before the per-test
    thread-leak check so that only our own threads are checked."""
    ap = apprise.Apprise()
    ap.add("nvirtest://warm-up")
    ap.notify(body="warm-up", title="warm-up")
    RECEIVED.clear()


class Recorder:
    name = "recorder"

    def __init__(self, fail: int = 0) -> None:
        self.messages: list[Message] = []
        self.times: list[float] = []
        self.fail = fail
        self.attempts = 0
        self.event = threading.Event()

    def send(self, message: Message) -> None:
        self.attempts += 1
        if self.fail > 0:
            self.fail -= 1
            raise OSError("channel down")
        self.messages.append(message)
        self.times.append(time.monotonic())
        self.event.set()


def notice(i: int, severity: str = "warning") -> Notice:
    return Notice(f"alert {i}", f"well {i} lost viability", severity, "P1", i)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_first_notice_goes_out_at_once_and_later_ones_are_coalesced():
    sink = Recorder()
    with Notifier([sink], min_interval_s=1.5) as n:
        t0 = time.monotonic()
        n.submit([notice(1)])
        assert wait_for(lambda: len(sink.messages) == 1)
        n.submit([notice(2)])
        n.submit([notice(3, "critical")])
        assert wait_for(lambda: len(sink.messages) == 2)
    first, second = sink.messages
    assert first.title == "alert 1"
    assert second.severity == "critical"
    assert "2 alerts (1 critical, 1 warning)" in second.title
    assert "well 2" in second.body and "well 3" in second.body
    assert sink.times[1] - sink.times[0] >= 1.45  # waited for the window
    assert sink.times[0] - t0 < 1.0  # the first one did not


def test_notices_of_one_alert_in_one_window_are_told_once():
    m = summarise([notice(1), Notice("up", "well 1 now critical", "critical", "P1", 1),
                   notice(2)])
    assert m.body.count("well 1") == 1 and "now critical" in m.body
    assert len(m.notices) == 2


def test_close_delivers_what_is_still_waiting_for_its_window():
    sink = Recorder()
    n = Notifier([sink], min_interval_s=60)
    n.submit([notice(1)])
    assert wait_for(lambda: len(sink.messages) == 1)
    n.submit([notice(2)])
    n.close()
    assert [m.title for m in sink.messages] == ["alert 1", "alert 2"]


def test_failing_channel_is_retried_with_backoff_and_others_are_not_held_up(caplog):
    flaky, steady = Recorder(fail=2), Recorder()
    with caplog.at_level(logging.WARNING, logger="nvir_agent.monitor.notify"), \
            Notifier([flaky, steady], min_interval_s=0, retry_base_s=0.05) as n:
        n.submit([notice(1)])
        assert wait_for(lambda: len(steady.messages) == 1, 1.0)
        assert wait_for(lambda: len(flaky.messages) == 1)
    assert flaky.attempts == 3 and steady.attempts == 1
    assert flaky.messages[0].title == "alert 1"
    assert sum("retrying" in r.message for r in caplog.records) == 2


def test_a_channel_that_keeps_failing_is_given_up_and_logged(caplog):
    dead = Recorder(fail=100)
    with caplog.at_level(logging.ERROR, logger="nvir_agent.monitor.notify"):
        n = Notifier([dead], min_interval_s=0, retry_base_s=0.01, max_attempts=3)
        n.submit([notice(1)])
        assert wait_for(lambda: dead.attempts == 3)
        n.close()
    assert any("giving up" in r.message for r in caplog.records)
    assert dead.attempts == 3


def test_submit_after_close_only_logs_and_starts_no_thread(caplog):
    n = Notifier([Recorder()])
    n.close()
    with caplog.at_level(logging.WARNING, logger="nvir_agent.monitor.notify"):
        n.submit([notice(1)])
    assert any("closed" in r.message for r in caplog.records)
    assert not any(t.name == "nvir-notify" for t in threading.enumerate())


def test_apprise_channel_delivers_through_a_registered_local_scheme():
    RECEIVED.clear()
    sink = AppriseSink(["nvirtest://lab-bench"])
    sink.send(Message("NViR Agent critical: P1 well B03", "viability 0.3", "critical"))
    assert RECEIVED == [("NViR Agent critical: P1 well B03", "viability 0.3", "failure")]


def test_apprise_channel_failure_is_retried_by_the_notifier():
    RECEIVED.clear()
    FAIL_NEXT["count"] = 1
    cfg = NotifyConfig(urls=["nvirtest://lab-bench"], min_interval_s=0)
    n = build_notifier(cfg)
    n.retry_base_s = 0.05
    n.submit([notice(7)])
    assert wait_for(lambda: len(RECEIVED) == 1)
    n.close()
    assert RECEIVED[0][0] == "alert 7"


def test_unknown_notification_url_is_a_config_error():
    with pytest.raises(ConfigError, match="not a notification URL"):
        build_notifier(NotifyConfig(urls=["nosuchscheme://x"]))


def test_given_tray_sink_is_used_unless_tray_is_off():
    tray, mail = Recorder(), Recorder()
    tray.name = "tray"
    assert build_notifier(NotifyConfig(), sinks=[tray, mail]).sinks[1:] == [tray, mail]
    assert build_notifier(NotifyConfig(tray=False), sinks=[tray, mail]).sinks[1:] == [mail]
    assert tray not in build_notifier(NotifyConfig()).sinks  # nothing is kept between notifiers


def test_log_sink_shows_alerts_on_the_console_level(caplog):
    with caplog.at_level(logging.INFO, logger="nvir_agent.monitor.notify"):
        LogSink(console=True).send(Message("t", "b", "warning"))
        LogSink(console=False).send(Message("t2", "b2", "warning"))
        LogSink().send(Message("t3", "b3", "critical"))
    levels = {r.message.split("\n")[0]: r.levelno for r in caplog.records}
    assert levels == {"t": logging.WARNING, "t2": logging.INFO, "t3": logging.ERROR}
