"""DILI maths: medians per concentration, fits per compound and day, margin of
safety, ROC AUC and sensitivity/specificity against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from nvir_agent.errors import DataError
from nvir_agent.report.dili import (
    CompoundLabel,
    ViabilityRecord,
    choose_day,
    evaluate_dili,
    fit_compounds,
    median_by_concentration,
    parse_compound_table,
    read_compound_table,
    records_from_points,
    roc_auc,
)

CONC = [0.3, 1.0, 3.0, 10.0, 30.0, 100.0]


def curve(x, ic50, hill=1.5):
    return 1.0 / (1.0 + (x / ic50) ** hill)


def records(compound, ic50, day=7, reps=3, cmax=None, spread=0.0):
    out = []
    for c in CONC:
        v = 1.0 if math.isinf(ic50) else curve(c, ic50)
        for k in range(reps):
            out.append(ViabilityRecord(compound, day, c, v + spread * (k - 1), cmax_uM=cmax))
    return out


def test_median_per_concentration_pools_replicates_and_plates():
    recs = [
        ViabilityRecord("A", 1, 1.0, 0.9, plate="P1"),
        ViabilityRecord("A", 1, 1.0000000001, 0.5, plate="P2"),
        ViabilityRecord("A", 1, 1.0, 0.7, plate="P2"),
        ViabilityRecord("A", 1, 10.0, 0.2),
        ViabilityRecord("A", 2, 10.0, 0.1),
        ViabilityRecord("B", 1, 3.0, float("nan")),
    ]
    med = median_by_concentration(recs)
    assert med[("A", 1)] == [(1.0, 0.7, 3), (10.0, 0.2, 1)]
    assert med[("A", 2)] == [(10.0, 0.1, 1)]
    assert ("B", 1) not in med


def test_fit_compounds_recovers_ic50_per_compound_and_day():
    recs = records("Toxin", 4.0, day=3, spread=0.02) + records("Toxin", 1.5, day=7, spread=0.02)
    recs += records("Sugar", math.inf, day=7, spread=0.02)
    fits = {(f.compound, f.day): f for f in fit_compounds(recs)}
    assert fits[("Toxin", 3)].fit.ic50 == pytest.approx(4.0, rel=0.02)
    assert fits[("Toxin", 7)].fit.ic50 == pytest.approx(1.5, rel=0.02)
    assert fits[("Sugar", 7)].fit.infinite
    assert fits[("Toxin", 7)].wells == (3,) * len(CONC)
    assert fits[("Toxin", 7)].mos is None  # no Cmax known


def test_cmax_from_table_overrides_plate_map_and_gives_mos():
    recs = records("Toxin", 2.0, cmax=0.5) + records("Other", 20.0, cmax=0.1)
    fits = {f.compound: f for f in fit_compounds(recs, cmax={"Toxin": 0.02})}
    assert fits["Toxin"].cmax_uM == 0.02
    assert fits["Toxin"].mos == pytest.approx(2.0 / 0.02, rel=1e-3)
    assert fits["Other"].cmax_uM == 0.1
    assert fits["Other"].mos == pytest.approx(200.0, rel=1e-3)


def test_infinite_ic50_gives_infinite_mos():
    (fit,) = fit_compounds(records("Sugar", math.inf, cmax=1.0))
    assert math.isinf(fit.mos)


def test_records_from_points_keeps_only_usable_treated_wells():
    def point(**kw):
        base = dict(plate="P", well="B02", timepoint=2, role="treated", compound="X",
                    concentration_uM=3.0, viability_rel_control=0.8, counted=True,
                    cmax_uM=0.5, flags=())
        base.update(kw)
        return SimpleNamespace(**base)

    pts = [
        point(),
        point(role="positive", compound="Tox", well="B03"),
        point(role="vehicle", compound="DMSO"),
        point(counted=False, flags=("qc", "out_of_focus")),
        point(viability_rel_control=None),
        point(concentration_uM=0.0),
        point(concentration_uM=None),
        point(compound=None),
    ]
    recs = records_from_points(pts)
    assert [(r.compound, r.day, r.concentration_uM, r.viability, r.cmax_uM) for r in recs] == [
        ("X", 2, 3.0, 0.8, 0.5), ("Tox", 2, 3.0, 0.8, 0.5)]


def test_roc_auc_matches_hand_computed_mann_whitney():
    # positives 10, 50, 200 against negatives 5, 50, 80:
    # 10 beats 5 (1); 50 beats 5, ties 50 (1.5); 200 beats all (3) → 5.5 / 9
    scores = [10, 50, 200, 5, 50, 80]
    labels = [True, True, True, False, False, False]
    assert roc_auc(scores, labels) == pytest.approx(5.5 / 9)
    assert roc_auc([1, 2], [True, True]) != roc_auc([1, 2], [True, True])  # nan: one class
    assert roc_auc([3, 1], [True, False]) == 1.0
    assert roc_auc([1, 3], [True, False]) == 0.0


def test_dili_evaluation_auc_sensitivity_specificity():
    # IC50 / Cmax: A 2/0.1 = 20 (DILI+, predicted +), B 3/1 = 3 (DILI+, predicted +),
    # C inf (DILI-, predicted -), D 5/0.01 = 500 (DILI-, predicted -),
    # E 50/0.05 = 1000 (DILI+, predicted -: a miss), F 1/0.04 = 25 (DILI-, predicted +: false alarm)
    ic50 = {"A": 2.0, "B": 3.0, "C": math.inf, "D": 5.0, "E": 50.0, "F": 1.0}
    cmax = {"A": 0.1, "B": 1.0, "C": 1.0, "D": 0.01, "E": 0.05, "F": 0.04}
    dili = {"A": True, "B": True, "C": False, "D": False, "E": True, "F": False}
    recs = [r for name, v in ic50.items() for r in records(name, v)]
    fits = fit_compounds(recs)
    labels = {n: CompoundLabel(n, dili[n], cmax[n]) for n in ic50}
    ev = evaluate_dili(fits, labels)
    assert ev.day == 7
    mos = {r.compound: r.mos for r in ev.rows}
    assert mos["A"] == pytest.approx(20, rel=1e-3) and math.isinf(mos["C"])
    assert ev.n_dili_positive == 3 and ev.n_dili_negative == 3
    assert ev.sensitivity == pytest.approx(2 / 3)  # A, B caught; E missed
    assert ev.specificity == pytest.approx(2 / 3)  # C, D right; F false alarm
    # DILI-negative MOS {inf→1e6, 500, 25} vs DILI+ {20, 3, 1000}:
    # 1e6 beats all three (3); 500 beats 20 and 3 (2); 25 beats 20 and 3 (2) → 7/9
    assert ev.auc == pytest.approx(7 / 9)


def test_dili_evaluation_skips_what_it_cannot_judge_and_says_why():
    recs = records("A", 2.0) + records("B", 3.0) + records("C", 3.0, day=5)
    recs += [ViabilityRecord("D", 7, 1.0, 0.5), ViabilityRecord("D", 7, 2.0, 0.4)]
    labels = {
        "A": CompoundLabel("A", True, 0.1),
        "B": CompoundLabel("B", None, 0.1),
        "C": CompoundLabel("C", False, 0.1),
        "D": CompoundLabel("D", False, 0.1),
        "E": CompoundLabel("E", True, None),
    }
    ev = evaluate_dili(fit_compounds(recs), labels)
    assert [r.compound for r in ev.rows] == ["A"]
    assert ev.skipped["B"] == "no DILI label"
    assert ev.skipped["C"] == "no dose-response at time point 7"
    assert ev.skipped["D"].startswith("fit failed")
    assert ev.skipped["E"].startswith("no dose-response")
    assert math.isnan(ev.auc)  # one class only


def test_day_seven_by_default_else_last_day():
    fits = fit_compounds(records("A", 2.0, day=3) + records("A", 2.0, day=5))
    assert choose_day(fits) == 5
    fits += fit_compounds(records("A", 2.0, day=7) + records("A", 2.0, day=9))
    assert choose_day(fits) == 7
    assert choose_day(fits, 9) == 9


def test_compound_table_accepts_words_and_numbers():
    table = parse_compound_table(
        "Compound,DILI,Cmax_uM\nA,1,0.5\nB,negative,\nC,yes,2\nD,,3\n"
    )
    assert table["A"] == CompoundLabel("A", True, 0.5)
    assert table["B"] == CompoundLabel("B", False, None)
    assert table["C"].dili is True and table["D"].dili is None and table["D"].cmax_uM == 3.0


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "is empty"),
        ("name,dili\nA,1\n", "no 'compound' column"),
        ("compound,toxic\nA,1\n", "neither a 'dili' nor a 'cmax_uM'"),
        ("compound,dili\nA,maybe\n", "line 2: dili value 'maybe'"),
        ("compound,dili,cmax_uM\nA,1,lots\n", "line 2: cmax_uM 'lots' is not a number"),
        ("compound,dili,cmax_uM\nA,1,-3\n", "must be a positive number"),
        ("compound,dili\nA,1\nA,0\n", "listed twice"),
        ("compound,dili\n,1\n", "name is empty"),
    ],
)
def test_bad_compound_table_is_a_clear_error(text, says):
    with pytest.raises(DataError) as info:
        parse_compound_table(text, source="drugs.csv")
    assert says in info.value.message and "drugs.csv" in info.value.message


def test_compound_table_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_compound_table(tmp_path / "none.csv")
    f = tmp_path / "c.csv"
    f.write_text("compound,dili\nA,positive\n")
    assert read_compound_table(f)["A"].dili is True
