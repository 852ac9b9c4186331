"""The acquisition-stalled rule, pure and through the monitor while the worker is idle."""

from __future__ import annotations

import itertools
import time

from core_helpers import make_config

from nvir_agent.config import AlertsConfig
from nvir_agent.monitor.alerts import acknowledge
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Notifier
from nvir_agent.monitor.stall import RULE, stall_condition, stall_due
from nvir_agent.monitor.timecourse import ImageScore, build_timecourses
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import Store

HOUR = 3600.0
T0 = 1.8e9


def plate_read_every(hours: float, reads: int, plate: str = "P1"):
    ids = itertools.count(1)
    images = [ImageScore(next(ids), plate, w, timepoint=tp, viability=1.0,
                         mtime=T0 + (tp - 1) * hours * HOUR + i * 30.0)
              for tp in range(1, reads + 1) for i, w in enumerate(("A01", "A02", "B01"))]
    return build_timecourses(images, {plate: None})[plate]


def test_a_plate_read_daily_stalls_when_its_next_read_is_well_overdue():
    tc = plate_read_every(24, 3)
    last = T0 + 48 * HOUR + 60.0  # the last image of read 3
    cfg = AlertsConfig()
    assert stall_condition(tc, cfg, now=last + 30 * HOUR) is None  # a bit late: fine
    c = stall_condition(tc, cfg, now=last + 40 * HOUR)
    assert c is not None and (c.rule, c.subject, c.severity, c.since) == (
        RULE, "plate", "warning", 3)
    assert "no new image for 40.0 h" in c.message and "every 24.0 h" in c.message
    assert stall_condition(tc, cfg, now=last + 5 * 24 * HOUR) is None  # finished: not followed


def test_a_burst_of_quick_reads_is_not_a_schedule_to_follow():
    tc = plate_read_every(0.01, 3)  # 36 s apart, like the demo's plate
    assert stall_condition(tc, AlertsConfig(), now=T0 + 600.0) is None


def test_one_read_has_no_rhythm_and_zero_switches_the_rule_off():
    assert stall_condition(plate_read_every(24, 1), AlertsConfig(), now=T0 + 1e6) is None
    tc = plate_read_every(24, 3)
    assert stall_condition(tc, AlertsConfig(stall_after=0), now=T0 + 100 * HOUR) is None


def test_when_time_alone_next_changes_the_stall_of_a_plate():
    tc = plate_read_every(24, 3)
    last = T0 + 48 * HOUR + 60.0
    cfg = AlertsConfig()  # stalled after 1.5 intervals, given up after 4
    assert stall_due(tc, cfg, now=last + HOUR) == last + 36 * HOUR  # when it would begin
    assert stall_due(tc, cfg, now=last + 40 * HOUR) == last + 40 * HOUR  # holds: always
    assert stall_due(tc, cfg, now=last + 97 * HOUR) is None  # finished: never again
    assert stall_due(plate_read_every(0.01, 3), cfg, now=T0 + 600.0) is None  # no rhythm
    assert stall_due(tc, AlertsConfig(stall_after=0), now=last + HOUR) is None


def test_the_monitor_raises_the_stall_while_no_result_arrives_and_a_new_read_clears_it(
        tmp_path):
    cfg = make_config(tmp_path, [])
    start = time.time() - 8 * HOUR  # read every 2 h, the last one 4 h ago

    def read(store, tp):
        ids = store.add_jobs([(f"/acq/P1_{w}_t{tp}.tif", 1, start + (tp - 1) * 2 * HOUR,
                               ImageKey(plate="P1", well=w, timepoint=tp))
                              for w in ("A01", "B01")])
        batch = []
        for r in store.records(ids):
            a = Analysis(record=r)
            a.found, a.viability = True, 1.0
            batch.append(a)
        return store.commit_results([a.result() for a in batch])

    with Store(tmp_path / "agent.sqlite3") as store:
        for tp in (1, 2, 3):
            read(store, tp)
        monitor = Monitor(cfg, store, Notifier([], min_interval_s=0))
        monitor.followed_for_s = 1e12  # the job rows were written "now", the images long ago
        try:
            monitor.on_idle()
            stalled = [a for a in store.alerts() if a.rule == RULE]
            assert [(a.plate, a.severity) for a in stalled] == [("P1", "warning")]
            monitor.on_idle()  # within idle_check_s: nothing more
            assert len(store.alerts(include_closed=True)) == len(store.alerts())
            start -= 2 * HOUR  # the next read arrives (2 h after the last)
            monitor.on_results(read(store, 5))
            assert [a for a in store.alerts() if a.rule == RULE] == []
            (closed,) = [a for a in store.alerts(include_closed=True) if a.rule == RULE]
            assert closed.state == "resolved"
        finally:
            monitor.close()


def test_the_idle_check_looks_again_only_at_plates_whose_alerts_time_can_change(tmp_path):
    """After a day of many plates the idle agent must stay quiet: a plate where
    only a new result can change anything is not re-evaluated every minute; one
    about to stall, one whose acknowledgement expires and an edited plate map are."""
    cfg = make_config(tmp_path, [])
    (tmp_path / "maps").mkdir()
    cfg.plates.maps = str(tmp_path / "maps")
    now = time.time()
    interval = 1000.0  # a steady rhythm (over 15 min): the stall rule follows P1

    def read(store, plate, tp, t, viability=1.0):
        ids = store.add_jobs([(f"/acq/{plate}_{w}_t{tp}.tif", 1, t,
                               ImageKey(plate=plate, well=w, timepoint=tp))
                              for w in ("A01", "B01")])
        batch = []
        for r in store.records(ids):
            a = Analysis(record=r)
            a.found, a.viability = True, viability if r.key.well == "A01" else 1.0
            batch.append(a)
        return store.commit_results([a.result() for a in batch])

    with Store(tmp_path / "agent.sqlite3") as store:
        # P1 read every 1000 s, the last read 1.5 intervals ago less 3 s: stalls soon
        last = now - 1.5 * interval + 3.0
        for tp in (1, 2, 3):
            read(store, "P1", tp, last - (3 - tp) * interval)
        # P2 and P3: quick reads, no rhythm; A01 of P2 falls (an alert to acknowledge)
        for tp in (1, 2, 3):
            read(store, "P2", tp, now - 60 + tp, viability=1.0 if tp == 1 else 0.2)
            read(store, "P3", tp, now - 60 + tp)
        monitor = Monitor(cfg, store, Notifier([], min_interval_s=0))
        monitor.idle_check_s = 0.0
        looked: list[list[str]] = []
        evaluate = monitor.evaluate
        monitor.evaluate = lambda plates=None: (looked.append(sorted(plates)),
                                                evaluate(plates))[1]
        try:
            monitor.on_idle()  # after a start: every plate once
            assert looked == [["P1", "P2", "P3"]]
            low = next(a for a in store.alerts() if a.plate == "P2")
            assert [a for a in store.alerts() if a.rule == RULE] == []
            monitor.on_idle()
            assert looked[1:] == []  # nothing can change by time alone yet
            with store.transaction() as tx:
                acknowledge(tx, low.id, until=time.time() + 0.3)
            time.sleep(max(0.0, now + 3.5 - time.time()))  # P1 overdue; the ack expired
            monitor.on_idle()
            assert looked[1:] == [["P1", "P2"]]
            assert [a.plate for a in store.alerts() if a.rule == RULE] == ["P1"]
            assert store.alert(low.id).state == "open"  # acknowledgement expired
            monitor.on_idle()
            assert looked[2:] == [["P1"]]  # stalled: its message counts the hours
            (tmp_path / "maps" / "p3.csv").write_text(
                "plate,well,role\nP3,A01,vehicle\nP3,B01,vehicle\n", encoding="utf-8")
            monitor.on_idle()
            assert looked[3:] == [["P1", "P2", "P3"]]
        finally:
            monitor.close()
