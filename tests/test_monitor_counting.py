"""The counting rule: drug effects are data in treated and positive wells,
imaging failures exclude the image everywhere, damaged controls are no
reference; and the consequences downstream (time courses, plate QC, missing
wells, dose-response records)."""

from __future__ import annotations

import itertools

import pytest

from nvir_agent.config import AlertsConfig
from nvir_agent.monitor import counting
from nvir_agent.monitor.platemap import parse_csv
from nvir_agent.monitor.rules import evaluate_plate
from nvir_agent.monitor.timecourse import ImageScore, build_timecourses
from nvir_agent.report.dili import records_from_points

_ids = itertools.count(1)


def img(well="B01", tp=1, v=1.0, plate="P1", **kw) -> ImageScore:
    kw.setdefault("mtime", float(tp) * 86400)
    return ImageScore(next(_ids), plate, well, timepoint=tp, viability=v, **kw)


MAP = parse_csv(
    "plate,well,role,compound,concentration_uM\n"
    "P1,A01:A04,vehicle,,\nP1,B01:B03,treated,Tox,10\nP1,C01:C03,positive,Killer,30\n",
    source="map.csv")[0]


@pytest.mark.parametrize("flags", [("fragmented",), ("too_small",), ("too_large",),
                                   ("multiple_objects",), ("fragmented", "too_small")])
@pytest.mark.parametrize("role", ["treated", "positive", None])
def test_drug_effect_findings_count_in_wells_that_hold_a_drug(flags, role):
    v = counting.image_verdict(img(v=0.05, qc=flags), role)
    assert v.counts and v.value == pytest.approx(0.05) and v.reason == ""


@pytest.mark.parametrize("flag", sorted(counting.IMAGING_FAILURE_FLAGS))
@pytest.mark.parametrize("role", ["treated", "positive", "vehicle", None])
def test_imaging_failures_exclude_the_image_wherever_it_is(flag, role):
    v = counting.image_verdict(img(v=0.05, qc=("fragmented", flag)), role)
    assert not v.counts and v.kind == counting.IMAGING and flag in v.reason


def test_a_treated_well_with_no_spheroid_left_counts_as_dead():
    v = counting.image_verdict(img(v=None, found=False, qc=("no_spheroid",)), "treated")
    assert v.counts and v.value == 0.0


def test_damaged_vehicle_wells_are_no_reference():
    v = counting.image_verdict(img(v=0.9, qc=("fragmented",)), "vehicle")
    assert not v.counts and v.kind == counting.CONTROL_QC and "fragmented" in v.reason


def test_unreadable_images_are_unreadable_not_qc_failures():
    v = counting.image_verdict(img(v=None, state="failed"), "treated")
    assert not v.counts and v.kind == counting.UNREADABLE
    assert not counting.counts_as_qc_failure(v.reason)


def _plate(images):
    return build_timecourses(images, {"P1": MAP})["P1"]


def test_dead_positive_control_wells_appear_at_every_read_and_in_the_fit():
    ims = []
    for tp in (1, 2, 3):
        ims += [img(w, tp, 1.0) for w in ("A01", "A02", "A03", "A04")]
        ims += [img(w, tp, 0.9) for w in ("B01", "B02", "B03")]
        ims += [img(w, tp, 0.04, qc=("fragmented",)) for w in ("C01", "C02", "C03")]
    tc = _plate(ims)
    dead = [p for p in tc.points if p.role == "positive"]
    assert sorted({p.timepoint for p in dead}) == [1, 2, 3] and len(dead) == 9
    assert all(p.counted and p.viability_rel_control == pytest.approx(0.04) for p in dead)
    recs = records_from_points(tc.points)
    assert sum(r.compound == "Killer" for r in recs) == 9
    assert all(r.wells_failed_qc == 0 for r in tc.reads)  # drug effects never fail plate QC


def test_an_excluded_well_keeps_its_score_but_no_viability_and_says_why():
    ims = [img(w, 1, 1.0) for w in ("A01", "A02", "A03", "A04")]
    ims.append(img("B01", 1, 0.3, qc=("out_of_focus",)))
    ims.append(img("B02", 1, 0.2, qc=("fragmented",)))
    ims.append(img("B02", 1, 0.9, qc=("saturated",), field=2))  # only field 1 counts
    tc = _plate(ims)
    b1, b2 = (next(p for p in tc.points if p.well == w) for w in ("B01", "B02"))
    assert not b1.counted and b1.score == pytest.approx(0.3)
    assert b1.viability_rel_control is None and "out_of_focus" in b1.exclusion
    assert b2.counted and b2.viability_rel_control == pytest.approx(0.2)
    assert records_from_points(tc.points)[0].well == "B02"


def test_unreadable_files_do_not_raise_the_plate_qc_alert():
    ims = [img(w, tp, 1.0) for tp in (1, 2) for w in ("A01", "A02", "A03", "A04")]
    # read 1: three of the treated wells' files cannot be read
    ims += [img(w, 1, None, state="failed") for w in ("B01", "B02", "B03")]
    ims += [img(w, 2, 0.9) for w in ("B01", "B02", "B03")]
    ims += [img(w, tp, 0.1) for tp in (1, 2) for w in ("C01", "C02", "C03")]
    tc = _plate(ims)
    r1 = tc.reads[0]
    assert (r1.wells_imaged, r1.wells_unreadable, r1.wells_failed_qc) == (10, 3, 0)
    rules = {c.rule for c in evaluate_plate(tc, AlertsConfig()).conditions}
    assert "qc_fail" not in rules


def test_blurred_images_do_raise_the_plate_qc_alert():
    ims = [img(w, tp, 1.0) for tp in (1, 2) for w in ("A01", "A02", "A03", "A04")]
    ims += [img(w, tp, 0.9, qc=("out_of_focus",)) for tp in (1, 2) for w in ("B01", "B02", "B03")]
    ims += [img(w, tp, 0.1) for tp in (1, 2) for w in ("C01", "C02", "C03")]
    tc = _plate(ims)
    assert [r.wells_failed_qc for r in tc.reads] == [3, 3]
    assert "qc_fail" in {c.rule for c in evaluate_plate(tc, AlertsConfig()).conditions}


def test_a_well_first_imaged_later_is_not_missing_from_earlier_reads():
    # no plate map: the expected wells are those imaged so far
    ims = [img(w, tp, 1.0) for tp in (1, 2, 3, 4) for w in ("A01", "A02")]
    ims += [img("A03", tp, 1.0) for tp in (3, 4)]
    tc = build_timecourses(ims, {"P1": None})["P1"]
    assert [r.missing_wells for r in tc.reads] == [(), (), (), ()]
    assert "missing_wells" not in {c.rule for c in evaluate_plate(tc, AlertsConfig()).conditions}
    # …but a well seen once and then absent from a complete read is missing
    ims = [im for im in ims if not (im.well == "A02" and im.timepoint == 2)]
    tc = build_timecourses(ims, {"P1": None})["P1"]
    assert tc.reads[1].missing_wells == ("A02",)
    conds = [c for c in evaluate_plate(tc, AlertsConfig()).conditions
             if c.rule == "missing_wells"]
    assert [c.subject for c in conds] == ["read:2"]
