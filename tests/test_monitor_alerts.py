"""Alert lifecycle in a real SQLite store: no duplicates, escalation, recovery,
operator actions, roll-up, and the Monitor listener across restarts."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest

from nvir_agent.app import build_engine
from nvir_agent.config import Config
from nvir_agent.errors import DataError, StoreError
from nvir_agent.monitor import alerts
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Message, Notifier
from nvir_agent.monitor.rules import Condition
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import Store

MAP_CSV = ("plate,well,role,compound,concentration_uM\n"
           "P1,A01:A04,vehicle,,\nP1,B01:B03,treated,Tox,10\nP1,C01:C03,treated,Safe,10\n")


def cond(subject="group:Tox 10 µM", rule="viability", severity="warning", since=2, tp=2,
         value=0.5, plate="P1") -> Condition:
    return Condition(plate, subject, rule, severity, since, tp, value, f"{subject} {severity}",
                     {"wells": ["B01"]})


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite3")
    yield s
    s.close()


def run(store, conditions, suppressed=None, now=100.0, plates=("P1",)):
    with store.transaction() as tx:
        return alerts.reconcile(tx, plates, conditions, suppressed, now=now)


def active(store):
    with store.transaction() as tx:
        return alerts.list_alerts(tx)


def test_a_condition_opens_one_alert_and_repeating_it_adds_nothing(store):
    first = run(store, [cond()])
    assert [(c.kind, c.notify) for c in first] == [("opened", True)]
    again = run(store, [cond(tp=3, value=0.45)], now=200.0)
    assert again == []
    (a,) = active(store)
    assert (a.state, a.timepoint, a.value, a.opened_at) == ("open", 3, 0.45, 100.0)


def test_the_store_refuses_a_second_active_alert_for_the_same_subject_and_rule(store):
    run(store, [cond()])
    with pytest.raises(StoreError, match="UNIQUE"), store.transaction() as tx:
        tx.insert_alert(plate="P1", subject="group:Tox 10 µM", rule="viability",
                        severity="warning", message="again", value=None, timepoint=None,
                        now=1.0, details={})


def test_escalation_to_critical_notifies_again_once(store):
    run(store, [cond()])
    up = run(store, [cond(severity="critical", tp=3)], now=200.0)
    assert [(c.kind, c.notify, c.alert.severity) for c in up] == [
        ("escalated", True, "critical")]
    assert run(store, [cond(severity="critical", tp=4)], now=300.0) == []
    assert run(store, [cond(severity="warning", tp=5)], now=400.0) == []  # never de-escalates
    (a,) = active(store)
    assert a.severity == "critical"
    with store.transaction() as tx:
        assert [e.action for e in alerts.alert_events(tx, a.id)] == ["opened", "escalated"]


def test_acknowledged_alert_that_escalates_is_open_again(store):
    (opened,) = run(store, [cond()])
    with store.transaction() as tx:
        alerts.acknowledge(tx, opened.alert.id, comment="on it", user="ana", now=150.0)
    (up,) = run(store, [cond(severity="critical")], now=200.0)
    assert up.alert.state == "open" and up.notify


def test_condition_gone_resolves_as_recovered_without_notifying(store):
    run(store, [cond()])
    (c,) = run(store, [], now=200.0)
    assert (c.kind, c.notify, c.alert.state, c.alert.closed_at) == (
        "recovered", False, "resolved", 200.0)
    assert active(store) == []
    # a new episode later is a new alert
    (new,) = run(store, [cond(since=6, tp=6)], now=300.0)
    assert new.kind == "opened" and new.alert.id != c.alert.id


def test_only_the_evaluated_plates_are_resolved(store):
    run(store, [cond(plate="P2")], plates=("P2",))
    assert run(store, [], plates=("P1",)) == []
    assert len(active(store)) == 1


def test_dismissed_episode_stays_closed_unless_it_escalates(store):
    (opened,) = run(store, [cond()])
    with store.transaction() as tx:
        alerts.dismiss(tx, opened.alert.id, comment="bubble", user="ana", now=150.0)
    assert run(store, [cond(tp=3)], now=200.0) == []
    (up,) = run(store, [cond(severity="critical", tp=4)], now=300.0)
    assert up.kind == "opened" and up.alert.severity == "critical" and up.notify


def test_well_alert_rolls_into_its_group_alert(store):
    (well,) = run(store, [cond(subject="well:B01")])
    key = ("P1", "well:B01", "viability")
    changes = run(store, [cond()], suppressed={key: "group:Tox 10 µM"}, now=200.0)
    kinds = {c.alert.subject: c.kind for c in changes}
    assert kinds == {"group:Tox 10 µM": "opened", "well:B01": "rolled_up"}
    with store.transaction() as tx:
        events = alerts.alert_events(tx, well.alert.id)
    assert "group:Tox 10 µM" in events[-1].comment


def test_operator_actions_record_who_when_and_comment(store):
    (opened,) = run(store, [cond()])
    with store.transaction() as tx:
        a = alerts.acknowledge(tx, opened.alert.id, comment="checking wells", now=150.0)
        assert a.state == "acknowledged"
        a = alerts.resolve(tx, opened.alert.id, comment="re-plated", now=160.0)
        assert (a.state, a.closed_at) == ("resolved", 160.0)
        events = alerts.alert_events(tx, a.id)
    assert [(e.action, e.user, e.comment) for e in events[1:]] == [
        ("acknowledged", getpass.getuser(), "checking wells"),
        ("resolved", getpass.getuser(), "re-plated")]


def test_unknown_or_closed_alert_ids_are_clear_errors(store):
    (opened,) = run(store, [cond()])
    with store.transaction() as tx:
        with pytest.raises(DataError, match="no alert with ID 999"):
            alerts.acknowledge(tx, 999)
        alerts.dismiss(tx, opened.alert.id)
        with pytest.raises(DataError, match="already dismissed"):
            alerts.acknowledge(tx, opened.alert.id)


# --------------------------------------------------------------------------- monitor


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)


def make_config(tmp_path: Path) -> Config:
    (tmp_path / "maps").mkdir(exist_ok=True)
    (tmp_path / "maps" / "p1.csv").write_text(MAP_CSV, encoding="utf-8")
    cfg = Config(source=tmp_path / "agent.toml")
    cfg.plates.maps = "maps"
    cfg.storage.database = "db.sqlite3"
    return cfg


TOX = [1.0, 0.8, 0.5, 0.3, 0.3]  # per time point, relative to vehicle 1.0


def add_read(store: Store, tp: int, tox: float, wells=None) -> list[int]:
    wells = wells or ["A01", "A02", "A03", "A04", "B01", "B02", "B03", "C01", "C02", "C03"]
    ids = store.add_jobs([(f"/acq/P1_{w}_t{tp}.tif", 1, float(tp),
                           ImageKey(plate="P1", well=w, timepoint=tp)) for w in wells])
    return commit(store, ids, tox)


def commit(store: Store, ids: list[int], tox: float) -> list[int]:
    batch = []
    for r in store.records(ids):
        a = Analysis(record=r)
        a.found = True
        a.viability = tox if r.key.well.startswith("B") else 1.0
        batch.append(a)
    return store.commit_results([a.result() for a in batch])


def test_monitor_raises_one_group_alert_escalates_it_and_survives_restart(tmp_path):
    cfg = make_config(tmp_path)
    sink = Recorder()
    store = Store(tmp_path / "db.sqlite3")
    monitor = Monitor(cfg, store, Notifier([sink], min_interval_s=0))
    for tp in (1, 2, 3, 4):
        monitor.on_results(add_read(store, tp, TOX[tp - 1]))
    monitor.close()
    store.close()
    (message,) = sink.messages  # one notification for the whole compound group
    assert "Tox 10 µM (3 wells)" in message.body and "Safe" not in message.body

    # restart: a new store connection and a new monitor see the same alert
    store = Store(tmp_path / "db.sqlite3")
    sink2 = Recorder()
    monitor = Monitor(cfg, store, Notifier([sink2], min_interval_s=0))
    with store.transaction() as tx:
        (a,) = alerts.list_alerts(tx)
        alerts.acknowledge(tx, a.id, comment="seen")
    assert (a.subject, a.rule, a.severity) == ("group:Tox 10 µM", "viability", "warning")
    monitor.on_results(add_read(store, 5, TOX[4]))
    monitor.close()
    with store.transaction() as tx:
        everything = alerts.list_alerts(tx, include_closed=True)
    store.close()
    assert [(x.id, x.severity, x.state) for x in everything] == [(a.id, "critical", "open")]
    assert len(sink2.messages) == 1 and "CRITICAL" in sink2.messages[0].title


def test_monitor_tells_the_operator_about_a_plate_without_map(tmp_path):
    cfg = Config(source=tmp_path / "agent.toml")
    sink = Recorder()
    with Store(tmp_path / "db.sqlite3") as store:
        monitor = Monitor(cfg, store, Notifier([sink], min_interval_s=0))
        monitor.on_results(add_read(store, 1, 1.0))
        monitor.close()
        with store.transaction() as tx:
            (a,) = alerts.list_alerts(tx)
    assert (a.rule, a.severity) == ("no_map", "info")
    assert "no plate map" in sink.messages[0].body


def test_adding_a_plate_map_later_reevaluates_and_resolves_the_no_map_alert(tmp_path):
    cfg = make_config(tmp_path)
    (tmp_path / "maps" / "p1.csv").unlink()
    with Store(tmp_path / "db.sqlite3") as store:
        monitor = Monitor(cfg, store, Notifier([Recorder()], min_interval_s=0))
        monitor.on_results(add_read(store, 1, 1.0))
        (tmp_path / "maps" / "p1.csv").write_text(MAP_CSV, encoding="utf-8")
        result = monitor.evaluate()
        monitor.close()
    assert [(c.kind, c.alert.rule) for c in result.changes] == [("recovered", "no_map")]


class ScoreFromTable:
    """Stands in for reading, segmenting and scoring: viability looked up by file name."""

    name = "fake-score"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            a.found = True
            a.viability = self.table[a.record.path.name + a.record.path.parent.name]


def test_built_engine_runs_the_monitor_after_its_stages(tmp_path):
    cfg = make_config(tmp_path)
    acq = tmp_path / "acq"
    table = {}
    for tp, tox in enumerate(TOX[:4], start=1):
        folder = acq / f"TimePoint_{tp}"
        folder.mkdir(parents=True)
        for w in ("A01", "A02", "A03", "A04", "B01", "B02", "B03", "C01", "C02", "C03"):
            (folder / f"P1_{w}_s1_w1.tif").write_bytes(b"x")
            table[f"P1_{w}_s1_w1.tif" + folder.name] = tox if w.startswith("B") else 1.0
    engine = build_engine(cfg, stages=[ScoreFromTable(table)])
    try:
        engine.process_paths([acq])
    finally:
        engine.close()
    with Store(tmp_path / "db.sqlite3") as store, store.transaction() as tx:
        found = [(a.subject, a.rule) for a in alerts.list_alerts(tx)]
    assert found == [("group:Tox 10 µM", "viability")]


def queue_read(store: Store, tp: int) -> list[int]:
    wells = ["B01", "B02", "B03", "A01", "A02", "A03", "A04", "C01", "C02", "C03"]
    return store.add_jobs([(f"/acq/P1_{w}_t{tp}.tif", 1, float(tp),
                            ImageKey(plate="P1", well=w, timepoint=tp)) for w in wells])


def test_a_read_still_arriving_raises_no_passing_plate_alerts(tmp_path):
    cfg = make_config(tmp_path)
    sink = Recorder()
    with Store(tmp_path / "db.sqlite3") as store:
        monitor = Monitor(cfg, store, Notifier([sink], min_interval_s=0),
                          min_eval_interval_s=0)
        for tp in (1, 2):
            ids = queue_read(store, tp)
            for i in range(0, len(ids), 2):  # treated wells first, vehicle wells later
                monitor.on_results(commit(store, ids[i:i + 2], 1.0))
        monitor.close()
        with store.transaction() as tx:
            assert alerts.list_alerts(tx, include_closed=True) == []
    assert sink.messages == []


def test_evaluation_waits_while_images_are_pending_and_runs_when_the_queue_drains(tmp_path):
    cfg = make_config(tmp_path)
    with Store(tmp_path / "db.sqlite3") as store:
        monitor = Monitor(cfg, store, Notifier([Recorder()], min_interval_s=0),
                          min_eval_interval_s=3600)
        opened_after = []
        for tp, tox in enumerate(TOX[:4], start=1):
            ids = queue_read(store, tp)
            for part in (ids[:5], ids[5:]):  # the B wells come first
                monitor.on_results(commit(store, part, tox))
                with store.transaction() as tx:
                    opened_after.append(len(alerts.list_alerts(tx)))
        # read 4's toxic wells are in after its first half, but the alert waits
        # until the read's last batch empties the queue
        assert opened_after == [0, 0, 0, 0, 0, 0, 0, 1]
        monitor.close()
        (stored,) = [p.plate_map for p in store.plates() if p.plate == "P1"]
    assert stored and "Tox" in str(stored)


def test_editing_a_plate_map_reevaluates_plates_without_new_images(tmp_path):
    cfg = make_config(tmp_path)
    with Store(tmp_path / "db.sqlite3") as store:
        monitor = Monitor(cfg, store, Notifier([Recorder()], min_interval_s=0))
        for tp in (1, 2, 3, 4):
            monitor.on_results(add_read(store, tp, TOX[tp - 1]))
        assert len(active(store)) == 1
        edited = MAP_CSV.replace("P1,B01:B03,treated,Tox,10", "P1,B01:B03,ignore,,")
        (tmp_path / "maps" / "p1.csv").write_text(edited, encoding="utf-8")
        os.utime(tmp_path / "maps" / "p1.csv", (2e9, 2e9))
        ids = store.add_jobs([("/acq/P2_A01.tif", 1, 1.0, ImageKey(plate="P2", well="A01"))])
        monitor.on_results(commit(store, ids, 1.0))  # an image of another plate
        monitor.close()
        # the Tox wells are ignored now: P1's alert is gone; P2 only says it has no map
        assert [(a.plate, a.rule) for a in active(store)] == [("P2", "no_map")]
