"""The operator's time limits: an acknowledgement that expires, and shelved plates
and compounds whose alerts are kept but not notified."""

from __future__ import annotations

import time

import pytest
from test_monitor_alerts import TOX, Recorder, add_read, make_config

from nvir_agent.errors import DataError
from nvir_agent.monitor import alerts
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Notifier
from nvir_agent.monitor.rules import Condition
from nvir_agent.store import Store


def cond(severity="warning", tp=2, compound="Tox") -> Condition:
    return Condition("P1", "group:Tox 10 µM", "viability", severity, 2, tp, 0.5,
                     "Tox 10 µM low", {"compound": compound})


def run(store, conditions, now):
    with store.transaction() as tx:
        return alerts.reconcile(tx, ["P1"], conditions, now=now)


def test_an_expired_acknowledgement_reopens_the_alert_and_notifies_again(tmp_path):
    db = tmp_path / "db.sqlite3"
    with Store(db) as store:
        (opened,) = run(store, [cond()], now=100.0)
    a = alerts.act_on_alert(db, opened.alert.id, "ack", comment="re-imaging",
                            until=time.time() + 3600)
    assert a.state == "acknowledged" and a.ack_until is not None
    with Store(db) as store:
        assert run(store, [cond(tp=3)], now=time.time()) == []  # still within the hour
        (back,) = run(store, [cond(tp=4)], now=time.time() + 7200)
        assert (back.kind, back.notify, back.alert.state, back.alert.ack_until) == (
            "ack_expired", True, "open", None)
        assert [e.action for e in store.alert_events(back.alert.id)][-1] == "ack_expired"


def test_an_expired_acknowledgement_of_a_gone_condition_just_resolves(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        (opened,) = run(store, [cond()], now=100.0)
        with store.transaction() as tx:
            alerts.acknowledge(tx, opened.alert.id, now=150.0, until=200.0)
        (c,) = run(store, [], now=300.0)
        assert (c.kind, c.notify, c.alert.state) == ("recovered", False, "resolved")


def test_time_limits_in_the_past_and_on_other_actions_are_refused(tmp_path):
    db = tmp_path / "db.sqlite3"
    with Store(db) as store:
        (opened,) = run(store, [cond()], now=100.0)
    with pytest.raises(DataError, match="expire before"):
        alerts.act_on_alert(db, opened.alert.id, "ack", until=time.time() - 1)
    with pytest.raises(DataError, match="Only an acknowledgement"):
        alerts.act_on_alert(db, opened.alert.id, "dismiss", until=time.time() + 60)
    with pytest.raises(DataError, match="plate or a compound"):
        alerts.shelve(db, "well", "B03", time.time() + 60)


def test_a_shelved_compound_still_alerts_but_is_not_notified(tmp_path):
    db = tmp_path / "db.sqlite3"
    Store(db).close()
    shelf = alerts.shelve(db, "compound", "Tox", time.time() + 3600, comment="expected toxic")
    assert (shelf.kind, shelf.name, shelf.comment) == ("compound", "Tox", "expected toxic")
    with Store(db) as store:
        (opened,) = run(store, [cond()], now=time.time())
        active = store.shelves(active_at=time.time())
        assert alerts.shelved(active, opened.alert) == shelf
        assert store.shelves(active_at=time.time() + 7200) == []  # over after the hour
        with store.transaction() as tx:
            tx.unshelve(shelf.id)
        assert store.shelves(active_at=time.time()) == []


def test_the_monitor_does_not_notify_a_shelved_plate_but_keeps_its_alert(tmp_path):
    cfg = make_config(tmp_path)
    sink = Recorder()
    with Store(tmp_path / "db.sqlite3") as store:
        pass
    alerts.shelve(tmp_path / "db.sqlite3", "plate", "P1", time.time() + 3600)
    with Store(tmp_path / "db.sqlite3") as store:
        monitor = Monitor(cfg, store, Notifier([sink], min_interval_s=0))
        for tp in (1, 2, 3, 4):
            monitor.on_results(add_read(store, tp, TOX[tp - 1]))
        monitor.close()
        assert [a.rule for a in store.alerts()] == ["viability"]  # raised and listed
    assert sink.messages == []  # but not notified
