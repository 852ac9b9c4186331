"""The acquisition-stalled rule, pure and through the monitor while the worker is idle."""

from __future__ import annotations

import itertools
import time

from core_helpers import make_config

from nvir_agent.config import AlertsConfig
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Notifier
from nvir_agent.monitor.stall import RULE, stall_condition
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
