"""The HTML report and the IC50 table from a real SQLite store populated
through the store API."""

from __future__ import annotations

import base64
import math
import re
import time

import pytest

from nvir_agent.errors import DataError
from nvir_agent.monitor.platemap import parse_csv
from nvir_agent.monitor.timecourse import save_plate_map
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey, parse_well
from nvir_agent.report.dili import CompoundLabel
from nvir_agent.report.html import collect_report, ic50_table, render_html, write_report
from nvir_agent.store import Store

CONCS = [0.3, 1.0, 3.0, 10.0, 30.0]
# compound → IC50 per read (inf: harmless); names include HTML metacharacters on purpose
TRUTH = {
    "Zorbicin": [math.inf, 20.0, 8.0, 4.0, 3.0],
    "Quellamide": [math.inf, math.inf, 25.0, 12.0, 6.0],
    "Harmlessol": [math.inf] * 5,
    "Vexatrine <b>&": [5.0, 3.0, 2.0, 1.5, 1.0],
    "Dullamine": [math.inf] * 5,
    "Fictozan": [math.inf, 15.0, 15.0, 15.0, 15.0],
    "Placebin": [math.inf] * 5,
    "Mortifene": [1.0, 0.8, 0.6, 0.5, 0.5],
}
VEHICLE_SCORE = 0.9  # raw model score of a vehicle well: normalisation must divide it out


def viability(conc, ic50):
    return 1.0 if math.isinf(ic50) else 1.0 / (1.0 + (conc / ic50) ** 1.5)


def plate_layout():
    wells = [f"{r}{c:02d}" for c in range(2, 13) for r in "ABCDEFGH"]
    rows = ["plate,well,role,compound,concentration_uM,cmax_uM"]
    layout = {}
    for r in "ABCDEFGH":
        rows.append(f"P1,{r}01,vehicle,DMSO,,")
        layout[f"{r}01"] = None
    k = 0
    for compound in TRUTH:
        for conc in CONCS:
            for _ in range(2):
                well = wells[k]
                k += 1
                rows.append(f'P1,{well},treated,"{compound}",{conc},0.1')
                layout[well] = (compound, conc)
    return "\n".join(rows) + "\n", layout


def key(plate, well, tp):
    row, col = parse_well(well)
    return ImageKey(vendor="test", plate=plate, well=well, row=row, column=col, field=1,
                    channel="1", timepoint=tp)


def populate_store(db):
    """Five reads of a mapped 96-well plate (8 compounds) and an unmapped plate."""
    text, layout = plate_layout()
    (pm,) = parse_csv(text, source="map.csv")
    store = Store(db)
    try:
        jobs = []
        for tp in range(1, 6):
            for well in layout:
                jobs.append((f"/acq/P1/t{tp}/{well}.tif", 1000, float(tp), key("P1", well, tp)))
            for well in ("A01", "A02", "B05"):  # a second plate without a map
                jobs.append((f"/acq/P2/t{tp}/{well}.tif", 1000, float(tp), key("P2", well, tp)))
        jobs.append(("/acq/P1/t5/broken.tif", 10, 5.0, key("P1", "H12", 5)))
        store.add_jobs(jobs)
        analyses = []
        for rec in store.pending(10_000):
            a = Analysis(record=rec, found=True, model="test")
            plate, well, tp = rec.key.plate, rec.key.well, rec.key.timepoint
            if rec.path.name == "broken.tif":
                a.fail("Truncated TIFF: the file ends inside the image data.")
            elif plate == "P2":
                a.viability = 0.8 - 0.05 * tp
            elif layout[well] is None:
                a.viability = VEHICLE_SCORE * (1.0 + 0.02 * ((ord(well[0]) % 3) - 1))
            else:
                compound, conc = layout[well]
                a.viability = VEHICLE_SCORE * viability(conc, TRUTH[compound][tp - 1])
                if well == "B11" and tp == 3:
                    a.qc = ["out_of_focus"]
            analyses.append(a)
        store.commit_results([a.result() for a in analyses])
        with store.transaction() as tx:
            save_plate_map(tx, "P1", pm)
            tx.insert_alert(plate="P1", subject="Mortifene 30 µM", rule="below_threshold",
                            severity="critical", message="Mortifene 30 µM: viability 0.02 "
                            "of control", value=0.02, timepoint=2, now=time.time(), details={})
    finally:
        store.close()
    return db


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    return populate_store(tmp_path_factory.mktemp("store") / "agent.sqlite3")


def test_ic50_table_recovers_truth_per_compound_and_day(database):
    rows = {(r.compound, r.day): r for r in ic50_table(database)}
    assert {c for c, _ in rows} == set(TRUTH)
    for (compound, day), row in rows.items():
        truth = TRUTH[compound][day - 1]
        assert row.converged, (compound, day, row.message)
        if math.isinf(truth):
            assert row.infinite and math.isinf(row.ic50), (compound, day, row.ic50)
        else:
            assert row.ic50 == pytest.approx(truth, rel=0.05), (compound, day)
            assert row.ci95[0] <= row.ic50 <= row.ci95[1]


def test_ic50_table_for_one_day_with_cmax_gives_mos(database):
    rows = ic50_table(database, day=4, compounds={"Zorbicin": CompoundLabel("Zorbicin", True, 0.02)})
    assert {r.day for r in rows} == {4}
    z = next(r for r in rows if r.compound == "Zorbicin")
    assert z.cmax_uM == 0.02 and z.mos == pytest.approx(4.0 / 0.02, rel=0.05)
    m = next(r for r in rows if r.compound == "Mortifene")
    assert m.cmax_uM == 0.1  # from the plate map


def test_report_renders_every_compound_and_is_self_contained(database, tmp_path):
    labels = {
        "Zorbicin": CompoundLabel("Zorbicin", True, 0.05),
        "Harmlessol": CompoundLabel("Harmlessol", False, 0.5),
        "Mortifene": CompoundLabel("Mortifene", True, 0.1),
        "Placebin": CompoundLabel("Placebin", False, 1.0),
    }
    out = write_report(database, tmp_path / "report.html", compounds=labels)
    text = out.read_text(encoding="utf-8")
    for compound in TRUTH:
        if compound != "Vexatrine <b>&":
            assert text.count(compound) >= 3, compound  # time course, dose-response, tables
    assert "Vexatrine &lt;b&gt;&amp;" in text and "Vexatrine <b>" not in text
    assert "<script" not in text.lower()
    sources = re.findall(r'src="([^"]+)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for s in sources:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'href="(?!#)', text)  # no links to external files
    # 2 plates of heatmaps + 8 time courses + 8 dose-response figures
    assert len(sources) == 2 + 8 + 8
    # QC summary: the failed image, the QC flag, the unmapped plate and the open alert
    assert "Truncated TIFF" in text and "out_of_focus" in text
    assert "Plates without a plate map" in text and "P2" in text
    assert "Mortifene 30 µM: viability 0.02 of control" in text
    # margin of safety and ROC on the default day (day 5: no day 7 here)
    assert "Margin of safety (time point 5)" in text and "ROC AUC" in text


def test_report_dili_numbers_match_the_truth(database):
    labels = {
        "Zorbicin": CompoundLabel("Zorbicin", True, 0.05),  # MOS 3/0.05 = 60 → predicted DILI+
        "Harmlessol": CompoundLabel("Harmlessol", False, 0.5),  # MOS inf → predicted DILI−
        "Fictozan": CompoundLabel("Fictozan", False, 0.1),  # MOS 150 → predicted DILI−
        "Mortifene": CompoundLabel("Mortifene", True, 0.001),  # MOS 500 → a miss
    }
    data = collect_report(database, compounds=labels)
    ev = data.dili
    assert ev is not None and ev.day == 5
    assert ev.sensitivity == pytest.approx(0.5) and ev.specificity == pytest.approx(1.0)
    # DILI− {inf, 150} vs DILI+ {60, 500}: inf beats both (2), 150 beats 60 (1) → 3/4
    assert ev.auc == pytest.approx(0.75)


def test_report_for_one_plate_and_day(database):
    data = collect_report(database, plate="P1", day=3)
    assert set(data.plates) == {"P1"}
    assert {f.day for f in data.fits} == {3}
    text = render_html(data)
    assert text.count("<img") == 1 + 8 + 8  # one plate's heatmap, time courses, dose-response
    assert "<tr><td>3</td><td>88</td>" in text  # the read summary row of read 3
    assert "<tr><td>2</td><td>88</td>" not in text
    assert data.qc.plates_without_map == []
    assert data.qc.images == {"done": 88 * 5, "failed": 1}


def test_report_to_unwritable_place_is_a_clear_error(database, tmp_path):
    with pytest.raises(DataError, match="Cannot write the report"):
        write_report(database, tmp_path / "no" / "such" / "dir" / "r.html")
    blocker = tmp_path / "taken"
    blocker.mkdir()
    with pytest.raises(DataError, match="Cannot write the report"):
        write_report(database, blocker, plate="P2")  # a folder where the file should go


def test_unknown_plate_or_day_names_what_exists(database):
    with pytest.raises(DataError, match="no analysed images of plate 'P9'") as info:
        collect_report(database, plate="P9")
    assert "P1, P2" in info.value.hint
    with pytest.raises(DataError, match="No time point 8") as info:
        collect_report(database, day=8)
    assert "1, 2, 3, 4, 5" in info.value.hint


@pytest.mark.filterwarnings("error")
def test_report_of_a_plate_without_scores_renders_and_says_so(tmp_path):
    text, layout = plate_layout()
    (pm,) = parse_csv(text, source="map.csv")
    db = tmp_path / "unscored.sqlite3"
    with Store(db) as store:
        store.add_jobs([(f"/acq/P1/{w}.tif", 1, 1.0, key("P1", w, 1)) for w in layout])
        store.commit_results([Analysis(record=r).result() for r in store.pending(1000)])  # no model
        with store.transaction() as conn:
            save_plate_map(conn, "P1", pm)
    data = collect_report(db)
    assert data.fits == []
    html_text = render_html(data)
    assert "No dose-response (no counted treated wells)" in html_text
    assert "Zorbicin" in html_text
    assert ic50_table(db) == []


def test_heatmap_grid_follows_the_plate_format():
    from nvir_agent.monitor.timecourse import PlateTimecourse, WellTimepoint
    from nvir_agent.report.figures import plate_grid

    def tc(wells, pm=None):
        pts = [WellTimepoint(plate="X", well=w, timepoint=1, role=None, compound=None,
                             concentration_uM=None, group=None, score=1.0,
                             viability_rel_control=None, viability_rel_baseline=1.0)
               for w in wells]
        return PlateTimecourse("X", pm, points=pts)

    assert plate_grid(tc(["A01", "H12"])) == (8, 12)
    assert plate_grid(tc(["A01", "P24"])) == (16, 24)
    assert plate_grid(tc(["B13"])) == (16, 24)
    (pm384,) = parse_csv("plate,well,role,compound,concentration_uM\nX,A01,vehicle,,\n",
                         plate_format=384)
    assert plate_grid(tc(["A01"], pm384)) == (16, 24)


def test_heatmap_marks_counted_wells_whose_images_are_unlike_training(tmp_path):
    import base64

    from nvir_agent.monitor.timecourse import PlateTimecourse, WellTimepoint
    from nvir_agent.report.figures import heatmap_png, read_cells

    def point(well, unlike=False, counted=True):
        return WellTimepoint(plate="X", well=well, timepoint=1, role=None, compound=None,
                             concentration_uM=None, group=None, score=1.0,
                             viability_rel_control=None, viability_rel_baseline=0.8,
                             counted=counted, unlike_training=unlike)

    tc = PlateTimecourse("X", None, points=[point("A01"), point("B03", unlike=True),
                                            point("C05", unlike=True, counted=False)])
    grid, excluded, unlike, have = read_cells(tc, 1, 8, 12, mapped=False)
    assert unlike == [(2, 1)]  # B03; C05 is crossed out, not marked
    assert excluded == [(4, 2)] and have == {"A01", "B03", "C05"}
    assert grid[1, 2] == 0.8
    plain = PlateTimecourse("X", None, points=[point("A01"), point("B03"),
                                               point("C05", counted=False)])
    marked, unmarked = heatmap_png(tc, [1]), heatmap_png(plain, [1])
    (tmp_path / "marked.png").write_bytes(base64.b64decode(marked))
    assert marked != unmarked


def test_demo_plate_with_perfect_scores_recovers_every_in_range_ic50_within_2x(tmp_path):
    """What the demo checks, with the model taken out: scores equal to the
    renderer's latent viability (biological spread included) → the IC50 table
    must find each toxic compound's IC50 within 2x once its effect has set in,
    and call harmless compounds infinite or above the tested range."""
    from nvir_agent.synth.plate import PlateSimulation, demo_plate_rows

    rows = demo_plate_rows("DEMO-P1")
    text = "plate,well,role,compound,concentration_uM\n" + "".join(
        f"{r['plate']},{r['well']},{r['role']},{r['compound']},{r['concentration_uM']}\n"
        for r in rows)
    (pm,) = parse_csv(text)
    sim = PlateSimulation(pm, days=6)
    db = tmp_path / "demo.sqlite3"
    with Store(db) as store:
        store.add_jobs([(f"/acq/{p}/{w}_{d}.tif", 1, float(d), key(p, w, d))
                        for d in sim.reads for p, w in sim.wells()])
        analyses = []
        for rec in store.pending(10_000):
            k = rec.key
            analyses.append(Analysis(record=rec, found=True, model="truth",
                                     viability=0.8 * sim.viability(k.plate, k.well, k.timepoint)))
        store.commit_results([a.result() for a in analyses])
        with store.transaction() as conn:
            save_plate_map(conn, "DEMO-P1", pm)
    truth = sim.truth()["compounds"]
    table = ic50_table(db)
    checked = 0
    for row in table:
        t = truth[row.compound]
        if t["toxic"] and t["ic50_in_range"] and row.day >= t["onset_day"]:
            assert row.converged and 0.5 < row.ic50 / t["ic50_uM"] < 2.0, row
            checked += 1
        elif not t["toxic"]:
            assert row.infinite or row.extrapolated, row
    assert checked >= 3 * 2  # three in-range toxic compounds, at least two days each
