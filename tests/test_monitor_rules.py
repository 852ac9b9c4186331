"""Alert rules on scripted viability sequences (pure: no store, no clock)."""

from __future__ import annotations

import itertools
import random

import pytest

from nvir_agent.config import AlertsConfig
from nvir_agent.monitor.platemap import parse_csv
from nvir_agent.monitor.rules import below, evaluate_plate, scan
from nvir_agent.monitor.timecourse import ImageScore, build_timecourses

MAP = parse_csv(
    "plate,well,role,compound,concentration_uM\n"
    "P1,A01:A04,vehicle,,\n"
    "P1,B01:B03,treated,Tox,10\n"
    "P1,C01:C03,treated,Safe,10\n"
    "P1,D01,treated,Solo,1\n",
    source="map.csv")[0]


def plate(series: dict[str, list[float | None]], vehicle: list[float] | None = None,
          mapped: bool = True, shuffle: bool = False, missing: dict[int, set[str]] | None = None,
          not_found: dict[int, set[str]] | None = None, qc: tuple[str, ...] = ("fragmented",)):
    """Images for P1: vehicle wells A01–A04 at `vehicle` (default 1.0), the other
    mapped wells at 1.0, and `series` for the wells it names."""
    n = max(len(v) for v in series.values())
    vehicle = vehicle or [1.0] * n
    ids = itertools.count(1)
    images = []
    all_series: dict[str, list[float | None]] = {
        w: [1.0] * n for w in MAP.wells} if mapped else {}
    all_series.update({w: [v * (1 + 0.01 * i) for v in vehicle]
                       for i, w in enumerate(("A01", "A02", "A03", "A04"))})
    all_series.update(series)
    for well, values in all_series.items():
        for tp, v in enumerate(values, start=1):
            if v is None or well in (missing or {}).get(tp, set()):
                continue
            bad = well in (not_found or {}).get(tp, set())
            images.append(ImageScore(next(ids), "P1", well, timepoint=tp, viability=v,
                                     found=not bad, qc=qc if bad else (), mtime=tp * 1000.0))
    if shuffle:
        random.Random(4).shuffle(images)
    tcs = build_timecourses(images, {"P1": MAP if mapped else None})
    return tcs["P1"]


def conds(tc, **cfg):
    ev = evaluate_plate(tc, AlertsConfig(**cfg))
    return {(c.subject, c.rule): c for c in ev.conditions}, ev


def test_one_low_read_is_not_enough_two_consecutive_raise_a_warning():
    c, _ = conds(plate({"D01": [1.0, 0.6, 1.0]}))
    assert ("well:D01", "viability") not in c
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6]}))
    alert = c[("well:D01", "viability")]
    assert (alert.severity, alert.since, alert.timepoint) == ("warning", 3, 3)
    assert alert.value == pytest.approx(0.6, rel=0.02)


def test_confirm_setting_sets_the_number_of_consecutive_reads():
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6]}), confirm=3)
    assert ("well:D01", "viability") not in c
    c, _ = conds(plate({"D01": [1.0, 0.6]}), confirm=1)
    assert c[("well:D01", "viability")].since == 2


def test_low_values_that_are_not_consecutive_do_not_alert():
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.9, 0.6, 0.9]}))
    assert ("well:D01", "viability") not in c


def test_two_reads_below_critical_escalate_to_critical_within_the_same_episode():
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6, 0.3]}))
    assert c[("well:D01", "viability")].severity == "warning"
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6, 0.3, 0.3]}))
    alert = c[("well:D01", "viability")]
    assert (alert.severity, alert.since) == ("critical", 3)


def test_recovery_inside_the_hysteresis_band_keeps_the_condition():
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6, 0.72, 0.72]}))
    assert ("well:D01", "viability") in c
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6, 0.8, 0.72]}))
    assert ("well:D01", "viability") in c  # one read above the band is not a recovery
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6, 0.8, 0.8]}))
    assert ("well:D01", "viability") not in c


def test_severity_does_not_fall_back_while_the_episode_lasts():
    c, _ = conds(plate({"D01": [1.0, 0.3, 0.3, 0.6, 0.6]}))
    assert c[("well:D01", "viability")].severity == "critical"


def test_drop_from_own_baseline_alerts_even_above_the_control_threshold():
    c, _ = conds(plate({"D01": [1.5, 1.4, 0.95, 0.95]}))
    assert ("well:D01", "viability") not in c
    alert = c[("well:D01", "drop")]
    assert alert.severity == "warning" and alert.value == pytest.approx(0.95 / 1.5, rel=0.01)


def test_drop_is_folded_into_a_viability_alert_of_the_same_subject():
    c, ev = conds(plate({"D01": [1.0, 0.5, 0.5]}))
    assert ("well:D01", "drop") not in c
    assert ev.suppressed[("P1", "well:D01", "drop")] == "well:D01"
    assert c[("well:D01", "viability")].details["baseline_drop"] == pytest.approx(0.5, rel=0.02)


def test_replicate_group_alerts_once_and_its_wells_roll_up():
    c, ev = conds(plate({"B01": [1.0, 0.5, 0.5], "B02": [1.0, 0.55, 0.5],
                         "B03": [1.0, 0.6, 0.45]}))
    group = c[("group:Tox 10 µM", "viability")]
    assert group.details["wells"] == ["B01", "B02", "B03"]
    assert sorted(group.details["alerting_wells"]) == ["B01", "B02", "B03"]
    assert not [k for k in c if k[0].startswith("well:B")]
    assert {k[1] for k in ev.suppressed if k[2] == "viability"} == {
        "well:B01", "well:B02", "well:B03"}
    assert group.value == pytest.approx(0.5, rel=0.02)  # the group's median


def test_group_alerts_on_its_median_not_on_one_outlier_well():
    c, _ = conds(plate({"B01": [1.0, 0.3, 0.3], "B02": [1.0, 1.0, 1.0], "B03": [1.0, 0.95, 1.0]}))
    assert ("group:Tox 10 µM", "viability") not in c
    assert c[("well:B01", "viability")].severity == "critical"


def test_harmless_compound_and_vehicle_wells_raise_nothing():
    c, _ = conds(plate({"C01": [1.0, 0.95, 1.02, 0.97], "C02": [1.0, 1.0, 0.98, 1.01],
                        "C03": [1.0, 0.97, 0.99, 1.0]}))
    assert c == {}


def test_result_does_not_depend_on_image_arrival_order():
    series = {"B01": [1.0, 0.5, 0.5, 0.3, 0.3], "B02": [1.0, 0.6, 0.5, 0.3, 0.35],
              "D01": [1.0, 0.9, 0.6, 0.6, 0.8]}
    a, _ = conds(plate(series))
    b, _ = conds(plate(series, shuffle=True))
    assert a == b


def test_vehicle_spread_above_control_cv_is_a_plate_qc_alert():
    tc = plate({"D01": [1.0, 1.0]})
    c, _ = conds(tc)
    assert ("plate", "control_cv") not in c
    c, _ = conds(tc, control_cv=0.005)  # the vehicle wells differ by ~1.3 %
    assert c[("plate", "control_cv")].severity == "warning"


def test_vehicle_median_falling_between_reads_alerts_on_that_read():
    c, _ = conds(plate({"D01": [1.0, 0.5, 0.5]}, vehicle=[1.0, 0.5, 0.5]))
    alert = c[("read:2", "control_drop")]
    assert alert.value == pytest.approx(0.5, rel=0.02)
    assert ("read:3", "control_drop") not in c
    # normalised to the fallen controls, the treated well is not toxic
    assert ("well:D01", "viability") not in c


def test_many_wells_failing_imaging_qc_alert():
    wells = {f"E{i:02d}": [1.0, 1.0] for i in range(1, 11)}
    ok, _ = conds(plate(wells))
    assert ("plate", "qc_fail") not in ok
    bad = {2: {f"E{i:02d}" for i in range(1, 7)}}
    c, _ = conds(plate(wells, not_found=bad, qc=("out_of_focus",)))
    assert c[("plate", "qc_fail")].value == pytest.approx(6 / 21)  # 4 + 7 mapped + 10 more wells
    bad = {2: {f"E{i:02d}" for i in range(1, 6)}}
    c, _ = conds(plate(wells, not_found=bad, qc=("out_of_focus",)))
    assert ("plate", "qc_fail") not in c  # 5 / 21 is under the 25 % limit


def test_fragmenting_treated_wells_are_toxicity_not_a_qc_failure():
    wells = {f"E{i:02d}": [1.0, 1.0] for i in range(1, 11)}
    bad = {2: {"B01", "B02", "B03", "C01", "C02", "C03", "D01"}}
    c, _ = conds(plate(wells, not_found=bad, qc=("fragmented",)))
    assert ("plate", "qc_fail") not in c
    # the same in vehicle wells is a QC failure (6 of 21 wells)
    bad = {2: {"A01", "A02", "A03", "A04", "B01", "B02"}}
    c, _ = conds(plate(wells, not_found=bad, qc=("out_of_focus",)))
    assert ("plate", "qc_fail") in c
    c, _ = conds(plate(wells, not_found={2: {"A01", "A02", "A03", "A04", "C01", "C02"}},
                       qc=("no_spheroid",)))
    assert ("plate", "qc_fail") not in c  # only the 4 vehicle wells count: 4 / 21


def test_missing_wells_alert_once_a_later_read_exists():
    series = {"B01": [1.0, 1.0, 1.0], "B02": [1.0, 1.0, 1.0], "B03": [1.0, 1.0, 1.0]}
    c, _ = conds(plate(series, missing={2: {"B02"}, 3: {"B03"}}))
    assert c[("read:2", "missing_wells")].details["wells"] == ["B02"]
    assert ("read:3", "missing_wells") not in c  # the latest read may still be in progress


def test_plate_without_map_gets_an_info_alert_and_baseline_relative_rules():
    c, _ = conds(plate({"D01": [1.0, 0.6, 0.6]}, mapped=False))
    assert c[("plate", "no_map")].severity == "info"
    alert = c[("well:D01", "viability")]
    assert "first time point" in alert.message
    # vehicle wells of an unmapped plate are ordinary wells: no alert for stable ones
    assert ("well:A01", "viability") not in c


def test_plate_with_too_few_controls_gets_a_no_controls_alert():
    failed = {1: {"A02", "A03", "A04"}}  # one usable vehicle well of four
    c, _ = conds(plate({"D01": [1.0]}, not_found=failed, qc=("out_of_focus",)))
    assert c[("plate", "no_controls")].severity == "warning"
    # while the read's vehicle wells are still arriving, nothing is judged yet
    c, _ = conds(plate({"D01": [1.0]}, missing={1: {"A02", "A03", "A04"}}))
    assert ("plate", "no_controls") not in c


def test_scan_skips_missing_values_and_orders_by_timepoint():
    ep = below([(3, 0.5), (1, 1.0), (2, None), (4, 0.5)], threshold=0.7, confirm=2,
               hysteresis=0.05)
    assert ep is not None and ep.since == 4
    ep = scan([(1, 5.0)], breach=lambda v: v > 1, clear=lambda v: v <= 1, confirm=1)
    assert ep is not None and ep.severity == "warning"

