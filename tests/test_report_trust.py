"""The HTML report says how far its scores can be trusted: intervals on the
figures, typicality and images unlike the training images per plate read,
the plate's warning, and "not available" for a model that cannot say.

A real SQLite store populated through the store API; the plate warning is
the monitor's own condition on that store."""

from __future__ import annotations

import math
import re

import pytest

from nvir_agent.monitor.platemap import parse_csv
from nvir_agent.monitor.rules import unlike_training_condition
from nvir_agent.monitor.timecourse import WellTimepoint, load_plate_timecourses, save_plate_map
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey, parse_well
from nvir_agent.report.figures import timecourse_png
from nvir_agent.report.html import collect_report, render_html
from nvir_agent.report.trust import concentration_intervals, group_interval
from nvir_agent.store import UNLIKE_TRAINING, Store, Trust

PLATE = "T1"
VEHICLE = [f"{r}01" for r in "ABCDEFGH"]
DOSES = {"A02": 1.0, "B02": 1.0, "C02": 3.0, "D02": 3.0, "E02": 10.0, "F02": 10.0,
         "G02": 30.0, "H02": 30.0}
STAY_LIKE = {"E01", "F01", "G01", "H01"}  # at time point 2 every other well is unlike


def viability(well: str, tp: int) -> float:
    if well in VEHICLE:
        return 1.0
    return 1.0 / (1.0 + (DOSES[well] / (20.0 if tp == 1 else 5.0)) ** 1.5)


def build(db, judge: str) -> None:
    """Two reads of a mapped plate scored by a model that gives intervals and
    typicality (``judge='all'``), typicality only (``'typicality'``) or neither."""
    text = "plate,well,role,compound,concentration_uM\n" + "".join(
        f"{PLATE},{w},vehicle,,\n" for w in VEHICLE) + "".join(
        f"{PLATE},{w},treated,Dimmerol,{c}\n" for w, c in DOSES.items())
    (pm,) = parse_csv(text)
    with Store(db) as store:
        jobs = []
        for tp in (1, 2):
            for well in [*VEHICLE, *DOSES]:
                row, col = parse_well(well)
                jobs.append((f"/acq/{PLATE}/t{tp}/{well}.tif", 1, float(tp), ImageKey(
                    vendor="test", plate=PLATE, well=well, row=row, column=col, field=1,
                    channel="1", timepoint=tp)))
        store.add_jobs(jobs)
        analyses = []
        for rec in store.pending(100):
            well, tp = rec.key.well, rec.key.timepoint
            v = viability(well, tp)
            a = Analysis(record=rec, found=True, model="dimmer.safetensors@abc", viability=v)
            unlike = tp == 2 and well not in STAY_LIKE
            if judge == "all":
                a.trust = Trust(v - 0.1, v + 0.1, 0.0 if unlike else 0.5, 5.0 if unlike else 1.0)
            elif judge == "typicality":
                a.trust = Trust(None, None, 0.0 if unlike else 0.5, 5.0 if unlike else 1.0)
            if unlike and judge != "none":
                a.qc = [UNLIKE_TRAINING]
            analyses.append(a)
        store.commit_results([a.result() for a in analyses])
        with store.transaction() as tx:
            save_plate_map(tx, PLATE, pm)
        tc = load_plate_timecourses(db, PLATE)[PLATE]
        cond = unlike_training_condition(tc)
        if cond is not None:
            with store.transaction() as tx:
                tx.insert_alert(plate=PLATE, subject=cond.subject, rule=cond.rule,
                                severity=cond.severity, message=cond.message, value=cond.value,
                                timepoint=cond.timepoint, now=1000.0, details=cond.details)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = {}
    for judge in ("all", "typicality", "none"):
        db = tmp_path_factory.mktemp(judge) / "agent.sqlite3"
        build(db, judge)
        data = collect_report(db)
        out[judge] = (data, render_html(data))
    return out


def _text(html_text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_text))


def test_flagged_images_give_the_plate_caveat_and_the_counts_per_time_point(reports):
    data, html_text = reports["all"]
    text = _text(html_text)
    # the monitor's plate warning, at the top of the report, with the fix
    assert "Images unlike the model's training images." in text
    assert "T1: 75% of the wells at time point 2 look unlike the images model" in text
    assert "nvir-agent train --init dimmer.safetensors" in text
    # the section in plain words and the count
    assert "How far the scores can be trusted" in text
    assert "12 of 32 images look unlike the images the model was trained on" in text
    assert "not available" not in text
    # per plate and time point: scored, judged, unlike, wells unlike, median typicality
    assert "<tr><td>T1</td><td>1</td><td>16</td><td>16</td><td>0</td><td>0 of 16</td>" \
           "<td>0.5</td></tr>" in html_text
    assert "<tr><td>T1</td><td>2</td><td>16</td><td>16</td><td>12</td><td>12 of 16</td>" \
           "<td>0</td></tr>" in html_text
    # intervals on the figures, and how replicates are combined
    assert "error bars: the median's 90 % interval" in text
    assert "Wide pale bar at a concentration: the 90 % interval of its median" in text
    assert "se² = mean(σᵢ²)/n + s²/n" in html_text


def test_a_model_without_intervals_or_typicality_says_not_available_once(reports):
    _data, html_text = reports["none"]
    text = _text(html_text)
    assert text.count("not available for this model") == 1
    assert "Intervals and typicality: not available for this model " \
           "(dimmer.safetensors@abc)" in text
    assert "error bars" not in text and "Wide pale bar" not in text
    assert "Images unlike the model's training images." not in text


def test_a_model_with_typicality_but_no_calibration_says_which_is_missing(reports):
    _data, html_text = reports["typicality"]
    text = _text(html_text)
    assert "Intervals: not available for this model" in text
    assert "12 of 32 images look unlike" in text
    assert "error bars" not in text


def point(well: str, value: float, half: float | None, conc: float = 3.0,
          counted: bool = True) -> WellTimepoint:
    return WellTimepoint(
        plate="X", well=well, timepoint=2, role="treated", compound="C", concentration_uM=conc,
        group=None, score=value, viability_rel_control=value, viability_rel_baseline=None,
        counted=counted, rel_control_low=None if half is None else value - half,
        rel_control_high=None if half is None else value + half)


def test_replicates_combine_the_wells_intervals_with_their_spread():
    # σ = 0.1 each (half-width 0.1645), values 0.4 and 0.6: se² = 0.02/2/2 + 0.02/2 = 0.015
    pts = [point("A01", 0.4, 0.1645), point("A02", 0.6, 0.1645)]
    low, high, n = group_interval(pts, 2)
    half = 1.645 * math.sqrt(0.015)
    assert n == 2 and low == pytest.approx(0.5 - half) and high == pytest.approx(0.5 + half)
    # one well: its own interval
    assert group_interval(pts[:1], 2)[:2] == pytest.approx((0.4 - 0.1645, 0.4 + 0.1645))
    # a well the counting rule excludes does not widen it; one without interval: none
    assert group_interval([*pts, point("A03", 0.0, 0.5, counted=False)], 2)[:2] == \
        pytest.approx((low, high))
    assert group_interval([*pts, point("A03", 0.5, None)], 2) is None
    got = concentration_intervals([*pts, point("B01", 0.9, 0.05, conc=1.0)], "C")
    assert set(got) == {(2, 3.0), (2, 1.0)}
    assert got[(2, 3.0)] == pytest.approx((low, high))


def test_time_course_figure_draws_the_intervals_only_when_there_are_some():
    with_ci = [point("A01", 0.4, 0.1645), point("A02", 0.6, 0.1645)]
    without = [point("A01", 0.4, None), point("A02", 0.6, None)]
    assert timecourse_png("C", with_ci, {}) != timecourse_png("C", without, {})
    assert timecourse_png("C", without, {}) == timecourse_png("C", without, {})
