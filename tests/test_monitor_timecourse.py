"""Time courses: time points, field/re-image handling, vehicle normalisation
with missing or failed controls and the cross-plate fallback, baselines."""

from __future__ import annotations

import itertools

import pytest

from nvir_agent.monitor.platemap import parse_csv
from nvir_agent.monitor.timecourse import (
    ImageScore,
    assign_timepoints,
    build_timecourses,
    load_timecourses,
    save_plate_map,
)
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import Store

_ids = itertools.count(1)


def img(plate="P1", well="A01", tp=1, v=1.0, **kw) -> ImageScore:
    kw.setdefault("mtime", float(tp) * 86400)
    return ImageScore(next(_ids), plate, well, timepoint=tp, viability=v, **kw)


def plate_map(plate="P1", extra="", dosing=""):
    text = ("plate,well,role,compound,concentration_uM,dosing_timepoint\n"
            f"{plate},A01:A04,vehicle,,,{dosing}\n{plate},B01:B03,treated,Tox,10,\n" + extra)
    return parse_csv(text, source="map.csv")[0]


def points(images, maps, **kw):
    tcs = build_timecourses(images, maps, **kw)
    return {(p.plate, p.well, p.timepoint): p for tc in tcs.values() for p in tc.points}, tcs


def test_viability_is_score_over_median_of_vehicle_wells():
    ims = [img(well=w, v=v) for w, v in zip(["A01", "A02", "A03", "A04"], [0.8, 1.0, 1.2, 5.0],
                                             strict=True)]
    ims.append(img(well="B01", v=0.55))
    pts, tcs = points(ims, {"P1": plate_map()})
    b = pts[("P1", "B01", 1)]
    assert b.control_median == pytest.approx(1.1)  # median of 0.8, 1.0, 1.2, 5.0
    assert b.viability_rel_control == pytest.approx(0.5)
    assert b.role == "treated" and b.compound == "Tox" and b.concentration_uM == 10
    assert tcs["P1"].reads[0].control.source == "plate"


def test_vehicle_wells_failing_qc_are_not_controls():
    ims = [img(well="A01", v=1.0), img(well="A02", v=1.0), img(well="A03", v=1.0),
           img(well="A04", v=0.1, found=False), img(well="B01", v=0.5)]
    ims.append(img(well="A04", v=0.1, qc=("out_of_focus",), field=2))
    pts, _ = points(ims, {"P1": plate_map()})
    assert pts[("P1", "B01", 1)].viability_rel_control == pytest.approx(0.5)
    assert "qc" in pts[("P1", "A04", 1)].flags
    assert "out_of_focus" in pts[("P1", "A04", 1)].flags


def test_qc_flags_listed_in_qc_ignore_do_not_disqualify_controls():
    ims = [img(well="A01", v=1.0, qc=("off_centre",)), img(well="A02", v=1.0),
           img(well="A03", v=2.0, qc=("off_centre",)), img(well="B01", v=0.5)]
    pts, _ = points(ims, {"P1": plate_map()}, qc_ignore=["off_centre"])
    assert pts[("P1", "B01", 1)].control_median == pytest.approx(1.0)
    pts, _ = points(ims, {"P1": plate_map()})
    assert "no_controls" in pts[("P1", "B01", 1)].flags


def test_too_few_controls_fall_back_to_same_timepoint_on_other_plates():
    ims = [img(plate="P1", well="A01", v=9.0), img(plate="P1", well="B01", v=0.6)]
    ims += [img(plate="P2", well=w, v=1.2) for w in ("A01", "A02", "A03")]
    ims += [img(plate="P2", well=w, tp=2, v=0.2) for w in ("A01", "A02", "A03")]
    pts, tcs = points(ims, {"P1": plate_map("P1"), "P2": plate_map("P2")})
    b = pts[("P1", "B01", 1)]
    assert b.viability_rel_control == pytest.approx(0.5)
    assert "fallback" in b.flags
    assert tcs["P1"].reads[0].control.source == "fallback"
    assert "fallback" not in pts[("P2", "A01", 1)].flags


def test_no_controls_anywhere_marks_the_value_and_leaves_it_empty():
    ims = [img(well="A01", v=1.0), img(well="A02", v=1.0), img(well="B01", v=0.6)]
    pts, _ = points(ims, {"P1": plate_map()})
    b = pts[("P1", "B01", 1)]
    assert b.viability_rel_control is None
    assert "no_controls" in b.flags


def test_min_controls_is_configurable():
    ims = [img(well="A01", v=1.0), img(well="A02", v=1.0), img(well="B01", v=0.6)]
    pts, _ = points(ims, {"P1": plate_map()}, min_controls=2)
    assert pts[("P1", "B01", 1)].viability_rel_control == pytest.approx(0.6)


def test_plate_without_map_is_relative_to_each_wells_first_timepoint():
    ims = [img(plate="X", well="C05", tp=t, v=v) for t, v in [(1, 0.8), (2, 0.6), (3, 0.4)]]
    pts, tcs = points(ims, {"X": None})
    assert tcs["X"].plate_map is None
    assert [pts[("X", "C05", t)].viability_rel_baseline for t in (1, 2, 3)] == pytest.approx(
        [1.0, 0.75, 0.5])
    assert all(pts[("X", "C05", t)].viability_rel_control is None for t in (1, 2, 3))
    assert "no_map" in pts[("X", "C05", 2)].flags and "baseline" in pts[("X", "C05", 1)].flags


def test_baseline_is_the_last_timepoint_before_dosing():
    pm = plate_map(dosing="3")
    ims = [img(well="B01", tp=t, v=v) for t, v in [(1, 0.5), (2, 1.0), (3, 0.8), (4, 0.5)]]
    pts, _ = points(ims, {"P1": pm})
    assert pts[("P1", "B01", 4)].viability_rel_baseline == pytest.approx(0.5)
    assert "baseline" in pts[("P1", "B01", 2)].flags


def test_reimaged_well_replaces_the_earlier_image_and_fields_give_the_median():
    ims = [img(well="B01", v=0.2, field=1, mtime=100.0),
           img(well="B01", v=0.9, field=1, mtime=200.0),  # re-imaged: wins
           img(well="B01", v=0.5, field=2, mtime=100.0),
           img(well="B01", v=0.7, field=3, mtime=100.0)]
    pts, _ = points(ims, {"P1": None})
    p = pts[("P1", "B01", 1)]
    assert p.score == pytest.approx(0.7)  # median of 0.9, 0.5, 0.7
    assert p.n_fields == 3


def test_late_image_for_an_earlier_read_updates_that_read_only():
    base = [img(well="B01", tp=1, v=1.0), img(well="B01", tp=2, v=0.8)]
    before, _ = points(base, {"P1": None})
    late = base + [img(well="B01", tp=1, v=0.6, field=2)]
    after, _ = points(late, {"P1": None})
    assert before[("P1", "B01", 1)].score == pytest.approx(1.0)
    assert after[("P1", "B01", 1)].score == pytest.approx(0.8)
    assert after[("P1", "B01", 2)].score == pytest.approx(0.8)
    assert len(after) == len(before)


def test_timepoints_from_acquisition_time_cluster_into_reads():
    t0 = 1_700_000_000.0
    ims = [ImageScore(i, "P", f"A{i:02d}", mtime=t0 + i * 30) for i in range(1, 6)]
    ims += [ImageScore(10 + i, "P", f"A{i:02d}", mtime=t0 + 86400 + i * 30) for i in range(1, 6)]
    ims += [ImageScore(20, "P", "A01", mtime=t0 + 2 * 86400)]
    tps = assign_timepoints(ims, read_gap_s=900)
    assert [tps[i] for i in (1, 5, 11, 15, 20)] == [1, 1, 2, 2, 3]


def test_elapsed_times_cluster_and_indices_are_used_as_given():
    ims = [ImageScore(1, "I", "A01", elapsed_s=0.0), ImageScore(2, "I", "A02", elapsed_s=120.0),
           ImageScore(3, "I", "A01", elapsed_s=86400.0), ImageScore(4, "I", "A02", elapsed_s=86500)]
    ims += [ImageScore(5, "J", "A01", timepoint=7, mtime=5.0)]
    tps = assign_timepoints(ims, read_gap_s=900)
    assert [tps[i] for i in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 7]


def test_read_summary_names_missing_wells_and_qc_failures():
    ims = [img(well=w, tp=1) for w in ("A01", "A02", "A03", "A04", "B01", "B02", "B03")]
    ims += [img(well=w, tp=2) for w in ("A01", "A02", "A03", "B01")]
    ims.append(img(well="A04", tp=2, found=False, qc=("no_spheroid",)))  # a control: counts
    ims.append(img(well="B02", tp=2, found=False, qc=("no_spheroid",)))  # may be the drug
    _, tcs = points(ims, {"P1": plate_map()})
    r1, r2 = tcs["P1"].reads
    assert r1.missing_wells == () and r1.wells_failed_qc == 0
    assert r2.missing_wells == ("B03",) and r2.wells_failed_qc == 1


def test_load_timecourses_reads_the_store(tmp_path):
    with Store(tmp_path / "db.sqlite3") as store:
        ids = store.add_jobs([(f"/x/{w}.tif", 1, 1.0, ImageKey(plate="P1", well=w, timepoint=1))
                              for w in ("A01", "A02", "A03", "B01")])
        batch = []
        for r in store.records(ids):
            a = Analysis(record=r)
            a.found, a.viability = True, (0.4 if r.key.well == "B01" else 0.8)
            batch.append(a)
        store.commit_results([a.result() for a in batch])
        with store.transaction() as conn:
            save_plate_map(conn, "P1", plate_map())
    pts = load_timecourses(tmp_path / "db.sqlite3")
    assert [(p.well, p.role) for p in pts] == [("A01", "vehicle"), ("A02", "vehicle"),
                                               ("A03", "vehicle"), ("B01", "treated")]
    assert pts[-1].viability_rel_control == pytest.approx(0.5)
    assert load_timecourses(tmp_path / "db.sqlite3", plate="other") == []
