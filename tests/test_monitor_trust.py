"""Alerts weigh how far a score can be trusted: intervals make a crossing
"possible" or "sure", and reads whose images are unlike the model's training
images raise one plate alert and carry a caveat (pure: no store, no clock)."""

from __future__ import annotations

import itertools

import pytest

from nvir_agent.config import AlertsConfig
from nvir_agent.monitor.platemap import parse_csv
from nvir_agent.monitor.rules import evaluate_plate, subject_interval
from nvir_agent.monitor.timecourse import ImageScore, build_timecourses
from nvir_agent.store.rows import UNLIKE_TRAINING, Trust

MAP = parse_csv(
    "plate,well,role,compound,concentration_uM\n"
    "P1,A01:A04,vehicle,,\n"
    "P1,B01:B03,treated,Tox,10\n"
    "P1,D01,treated,Solo,1\n",
    source="map.csv")[0]
MODEL = "nvir-demo.safetensors@0a6fb37e"


def plate(series, half=0.05, unlike_at=(), judged=True):
    """Images of P1 (vehicle 1.0, others 1.0 unless in `series`), each with a
    ±`half` interval; every image at the time points `unlike_at` is unlike training."""
    ids = itertools.count(1)
    n = max(len(v) for v in series.values())
    values = {w: [1.0] * n for w in MAP.wells}
    values.update(series)
    images = []
    for well, vs in values.items():
        for tp, v in enumerate(vs, start=1):
            trust = Trust(v - half, v + half, 0.0 if tp in unlike_at else 0.5,
                          5.0 if tp in unlike_at else 1.0) if judged else Trust()
            qc = (UNLIKE_TRAINING,) if tp in unlike_at else ()
            images.append(ImageScore(next(ids), "P1", well, timepoint=tp, viability=v,
                                     qc=qc, mtime=tp * 1000.0, trust=trust, model=MODEL))
    return build_timecourses(images, {"P1": MAP})["P1"]


def conds(tc, **cfg):
    ev = evaluate_plate(tc, AlertsConfig(**cfg))
    return {(c.subject, c.rule): c for c in ev.conditions}


def test_a_critical_crossing_within_the_interval_is_only_possible():
    cfg = AlertsConfig()
    v = cfg.critical - 0.02  # just below the critical level
    c = conds(plate({"D01": [1.0, v, v]}, half=0.2))[("well:D01", "viability")]
    assert c.severity == "warning" and c.details["certainty"] == "possible"
    assert c.message.split(": ", 1)[1].startswith("possibly viability")
    assert "90% interval" in c.message and "1 replicate" in c.message


def test_a_critical_crossing_beyond_the_interval_is_sure_and_critical():
    c = conds(plate({"D01": [1.0, 0.1, 0.1]}, half=0.03))[("well:D01", "viability")]
    assert c.severity == "critical" and c.details["certainty"] == "sure"
    low, high = c.details["interval"]
    assert low < 0.1 < high < AlertsConfig().critical


def test_a_group_alert_combines_replicates_and_intervals():
    tc = plate({"B01": [1.0, 0.30, 0.30], "B02": [1.0, 0.34, 0.34],
                "B03": [1.0, 0.38, 0.38]}, half=0.05)
    c = next(x for k, x in conds(tc).items() if k[0].startswith("group:"))
    assert c.details["replicates"] == 3 and "from 3 replicates" in c.message
    tp_points = [p for p in tc.points if p.well in ("B01", "B02", "B03")]
    low, high, n = subject_interval(tp_points, 3)
    # se² = mean(σ²)/n + s²/n with σ = 0.05 / 1.645 and s = 0.04: width 2·1.645·0.029
    assert n == 3 and high - low == pytest.approx(0.0954, abs=0.001)


def test_alerts_without_intervals_say_nothing_about_certainty():
    c = conds(plate({"D01": [1.0, 0.1, 0.1]}, judged=False))[("well:D01", "viability")]
    assert c.severity == "critical" and "certainty" not in c.details


def test_most_wells_unlike_training_raise_one_plate_alert_in_plain_words():
    c = conds(plate({"D01": [1.0, 1.0, 1.0]}, unlike_at=(2, 3)))
    alert = c[("plate", "unlike_training")]
    assert alert.severity == "warning" and alert.timepoint == 3
    assert f"look unlike the images model {MODEL} was trained on" in alert.message
    assert "this microscope's images differ from them" in alert.message
    assert "scores may be wrong" in alert.message
    assert "nvir-agent train --init nvir-demo.safetensors" in alert.message


def test_treated_well_alerts_on_an_unlike_read_carry_the_caveat():
    c = conds(plate({"D01": [1.0, 0.3, 0.3]}, unlike_at=(2, 3)))
    alert = c[("well:D01", "viability")]
    assert "unlike the images model" in alert.details["caveat"]
    assert "Caution:" in alert.message


def test_images_unlike_training_still_count_and_do_not_fail_qc():
    tc = plate({"D01": [1.0, 0.9, 0.9]}, unlike_at=(1, 2, 3))
    assert all(p.counted and p.passed_qc for p in tc.points)
    assert ("plate", "qc_fail") not in conds(tc)


def test_a_plate_of_typical_images_has_no_unlike_training_alert():
    assert ("plate", "unlike_training") not in conds(plate({"D01": [1.0, 1.0]}))


def test_a_group_interval_near_zero_viability_stops_at_zero():
    tc = plate({"B01": [1.0, 0.02, 0.02], "B02": [1.0, 0.03, 0.03],
                "B03": [1.0, 0.06, 0.06]}, half=0.05)
    tp_points = [p for p in tc.points if p.well in ("B01", "B02", "B03")]
    low, high, _ = subject_interval(tp_points, 3)
    assert low == 0.0 < high
    c = next(x for k, x in conds(tc).items() if k[0].startswith("group:"))
    assert "-0.0" not in c.message and c.details["interval"][0] == 0.0
