"""Synthetic time-lapse plates: dose-response truth, vendor names, slow writes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from nvir_agent.errors import DataError
from nvir_agent.ingest.filenames import parse_path
from nvir_agent.monitor.platemap import parse_csv
from nvir_agent.synth.plate import (
    DEFAULT_COMPOUNDS,
    NAMINGS,
    Compound,
    PlateSimulation,
    demo_plate_rows,
    image_name,
    read_compounds,
    write_plate_map,
)

SMALL_MAP = """plate,well,role,compound,concentration_uM
P1,A01,vehicle,,
P1,A02,vehicle,,
P1,B01,treated,Fictazine,32
P1,B02,treated,Fictazine,0.5
P1,C01,treated,Pretendol,32
P1,C02,treated,Shamacil,32
P1,D01,positive,Killitox,30
P1,D02,empty,,
"""


def _sim(days=5, size=96, **kw):
    return PlateSimulation(parse_csv(SMALL_MAP), days=days, size=size, seed=1, **kw)


def test_log_logistic_truth_with_onset():
    c = Compound("X", ic50_uM=10.0, hill=2.0, onset_day=3)
    assert c.viability(10.0, 3) == pytest.approx(0.5)
    assert c.viability(10.0, 1) == 1.0  # before onset nothing happens
    assert c.viability(0.0, 5) == 1.0
    assert c.viability(100.0, 5) == pytest.approx(1 / 101)
    assert not Compound("Y").toxic and Compound("Y").viability(100.0, 5) == 1.0


def test_demo_plate_has_96_wells_with_controls_and_six_compounds_in_triplicate():
    rows = demo_plate_rows()
    assert len(rows) == 96 and len({r["well"] for r in rows}) == 96
    roles = [r["role"] for r in rows]
    assert roles.count("vehicle") >= 8 and roles.count("positive") >= 3
    treated = [(r["compound"], r["concentration_uM"]) for r in rows if r["role"] == "treated"]
    assert len({c for c, _ in treated}) == 6
    assert all(treated.count(t) == 3 for t in treated)
    assert {c.onset_day for c in DEFAULT_COMPOUNDS.values() if c.toxic} >= {1, 5}


def test_demo_plate_map_round_trips_through_the_plate_map_parser(tmp_path):
    path = write_plate_map(tmp_path / "map.csv", demo_plate_rows("DEMO-X"))
    maps = parse_csv(path.read_text(), source=str(path))
    assert maps[0].plate == "DEMO-X" and len(maps[0].wells) == 96


def test_viability_falls_only_in_toxic_wells_and_after_onset():
    sim = _sim()
    v = {(w["well"], w["day"]): w["viability"] for w in sim.truth()["wells"]}
    assert v[("B01", 1)] < 0.2  # Fictazine 32 µM, onset day 1
    assert v[("B02", 1)] > 0.7  # far below its IC50
    assert v[("C01", 4)] > 0.85 and v[("C01", 5)] < 0.2  # Pretendol: onset day 5
    assert all(v[("C02", d)] > 0.8 for d in sim.reads)  # harmless
    assert all(v[("A01", d)] > 0.8 for d in sim.reads)  # vehicle
    assert v[("D01", 1)] < 0.05  # positive control


def test_truth_lists_compounds_and_skips_empty_wells():
    truth = _sim(days=2).truth()
    assert truth["compounds"]["Fictazine"]["toxic"] is True
    assert truth["compounds"]["Fictazine"]["ic50_uM"] == 2.0
    assert truth["compounds"]["Shamacil"]["ic50_uM"] is None
    assert {w["well"] for w in truth["wells"]} == {"A01", "A02", "B01", "B02", "C01", "C02", "D01"}
    assert truth["days"] == [1, 2]


def test_a_well_keeps_its_spheroid_across_days():
    sim = _sim()
    a, b = sim.render("P1", "C02", 1), sim.render("P1", "C02", 2)
    other = sim.render("P1", "A01", 1)
    ca, cb, co = (np.argwhere(r.mask).mean(0) for r in (a, b, other))
    assert np.abs(ca - cb).max() < 3 < np.abs(ca - co).max()
    assert not np.array_equal(a.image, b.image)  # a new photograph each day


@pytest.mark.parametrize("naming", NAMINGS)
def test_written_names_parse_back_to_plate_well_and_read(tmp_path, naming):
    sim = _sim(days=2)
    files = sim.write_read(2, tmp_path, naming)
    assert len(files) == 7
    for f in files:
        key = parse_path(f.relative_to(tmp_path), naming)
        assert key.plate == "P1"
        assert key.well in {"A01", "A02", "B01", "B02", "C01", "C02", "D01"}
        assert key.timepoint == 2 or key.elapsed_s == 2 * 86400


def test_imagexpress_layout_matches_the_vendor_folders():
    assert image_name("PL1", "B3", 4, "imagexpress") == "PL1/TimePoint_4/PL1_B03_s1_w1.TIF"


def test_slow_writes_grow_the_final_file_in_place(tmp_path):
    sim = _sim(days=1, size=256)
    sizes = []
    target = tmp_path / "P1" / "TimePoint_1" / "P1_A01_s1_w1.TIF"

    def watch():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(sizes) < 200:
            if target.exists():
                sizes.append(target.stat().st_size)
            time.sleep(0.005)

    t = threading.Thread(target=watch)
    t.start()
    sim.write_read(1, tmp_path, chunk_delay_s=0.02, chunk_bytes=16 * 1024)
    t.join()
    assert sizes and min(sizes) < max(sizes)  # seen partially written under its final name
    assert not list(tmp_path.rglob("*.tmp"))


def test_compound_table_csv_is_read_with_harmless_entries(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("compound,ic50_uM,hill,onset_day\nA,3,1.5,2\nB,,1,1\nC,inf,1,1\n")
    table = read_compounds(p)
    assert table["A"] == Compound("A", 3.0, 1.5, 2.0)
    assert not table["B"].toxic and not table["C"].toxic


@pytest.mark.parametrize("text", ["name,x\nA,1\n", "compound,ic50_uM,hill,onset_day\nA,abc,1,1\n",
                                  "compound,ic50_uM,hill,onset_day\nA,-1,1,1\n", ""])
def test_bad_compound_tables_raise_a_clear_error(tmp_path, text):
    p = tmp_path / "c.csv"
    p.write_text(text)
    with pytest.raises(DataError, match="compound table|line"):
        read_compounds(p)


def test_plate_map_compound_without_truth_is_refused():
    maps = parse_csv("plate,well,role,compound,concentration_uM\nP,A01,treated,Mystery,1\n")
    with pytest.raises(DataError, match="Mystery"):
        PlateSimulation(maps)


def test_unknown_read_or_naming_is_refused(tmp_path):
    sim = _sim(days=2)
    with pytest.raises(DataError):
        sim.write_read(3, tmp_path)
    with pytest.raises(DataError):
        image_name("P", "A01", 1, "nikon")
