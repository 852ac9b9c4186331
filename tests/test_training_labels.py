"""Labels CSV reading: vehicle normalisation as the paper does it, and a clear
DataError for every kind of unusable input."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvir_agent.errors import DataError
from nvir_agent.training.labels import normalise_to_vehicle, read_labels


def write(tmp_path: Path, text: str, images: list[str] | None = None) -> Path:
    csv = tmp_path / "labels.csv"
    csv.write_text(text, encoding="utf-8")
    for name in images or []:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return csv


ATP_CSV = """image,plate,day,role,atp,site
a.png,P1,1,vehicle,100,A
b.png,P1,1,vehicle,120,A
c.png,P1,1,vehicle,80,A
d.png,P1,1,treated,50,A
e.png,P1,2,vehicle,200,A
f.png,P1,2,vehicle,300,A
g.png,P1,2,treated,125,A
h.png,P2,1,vehicle,10,A
i.png,P2,1,treated,5,A
"""


def test_raw_atp_is_divided_by_the_median_vehicle_well_of_its_plate_and_day(tmp_path):
    names = [line.split(",")[0] for line in ATP_CSV.splitlines()[1:]]
    labels = read_labels(write(tmp_path, ATP_CSV, names))
    got = {it.name: round(it.viability, 6) for it in labels.items}
    # P1 day 1: median(100, 120, 80) = 100; P1 day 2: median(200, 300) = 250; P2 day 1: 10
    assert got == {"a.png": 1.0, "b.png": 1.2, "c.png": 0.8, "d.png": 0.5,
                   "e.png": 0.8, "f.png": 1.2, "g.png": 0.5, "h.png": 1.0, "i.png": 0.5}
    assert labels.label_source == "atp"
    summary = labels.summary()
    assert summary["n_images"] == 9 and summary["n_plates"] == 2
    assert summary["days"] == ["1", "2"] and summary["sites"] == ["A"]


def test_atp_raw_column_works_like_atp_and_same_plate_name_at_two_sites_is_kept_apart():
    rows = [("A", "P1", 1.0, "vehicle", 10.0), ("B", "P1", 1.0, "vehicle", 40.0),
            ("A", "P1", 1.0, "treated", 5.0), ("B", "P1", 1.0, "treated", 5.0)]
    assert normalise_to_vehicle(rows) == [1.0, 1.0, 0.5, 0.125]


def test_viability_column_is_used_as_given_and_relative_paths_start_at_the_image_root(tmp_path):
    root = tmp_path / "imgs"
    csv = write(tmp_path, "image,viability,plate,day\nx/a.png,0.75,P1,3\n")
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.png").write_bytes(b"x")
    labels = read_labels(csv, root)
    item = labels.items[0]
    assert item.viability == 0.75 and item.path == root / "x" / "a.png"
    assert item.day == 3.0 and item.site == "default" and item.batch == "P1"


def test_empty_and_ignored_wells_are_left_out(tmp_path):
    text = "image,viability,role\na.png,1.0,vehicle\nb.png,0,empty\nc.png,0.3,IGNORE\n"
    labels = read_labels(write(tmp_path, text, ["a.png", "b.png", "c.png"]))
    assert [it.name for it in labels.items] == ["a.png"] and labels.skipped == 2


def test_missing_images_are_counted_and_the_first_few_named(tmp_path):
    rows = "".join(f"m{i}.png,1.0\n" for i in range(8))
    csv = write(tmp_path, "image,viability\nok.png,1.0\n" + rows, ["ok.png"])
    with pytest.raises(DataError) as exc:
        read_labels(csv)
    msg = str(exc.value)
    assert "8 of 9 images" in msg and "m0.png" in msg and "m4.png" in msg
    assert "m5.png" not in msg and "and 3 more" in msg and "--images" in msg


def test_missing_image_column_names_the_columns_found(tmp_path):
    with pytest.raises(DataError, match="no image column.*viability"):
        read_labels(write(tmp_path, "viability\n1.0\n"))


def test_missing_label_columns_are_named_with_what_is_expected(tmp_path):
    with pytest.raises(DataError) as exc:
        read_labels(write(tmp_path, "image,atp,plate\na.png,1\n", ["a.png"]))
    assert "day, role" in exc.value.message and "viability" in exc.value.hint
    with pytest.raises(DataError, match="atp \\(or atp_raw\\), plate, day, role"):
        read_labels(write(tmp_path, "image,site\na.png,A\n", ["a.png"]))


def test_plate_and_day_without_vehicle_wells_are_named(tmp_path):
    text = ("image,plate,day,role,atp\na.png,P1,1,vehicle,10\nb.png,P1,2,treated,5\n"
            "c.png,P2,1,treated,3\n")
    with pytest.raises(DataError) as exc:
        read_labels(write(tmp_path, text, ["a.png", "b.png", "c.png"]))
    assert "2 plate/day groups" in exc.value.message
    assert "plate P1 day 2" in exc.value.message and "plate P2 day 1" in exc.value.message
    assert "vehicle" in exc.value.hint


def test_a_value_that_is_not_a_number_names_line_and_column(tmp_path):
    with pytest.raises(DataError, match="line 3: viability is 'high'"):
        read_labels(write(tmp_path, "image,viability\na.png,1\nb.png,high\n",
                          ["a.png", "b.png"]))
    with pytest.raises(DataError, match="line 2: day is 'monday'"):
        read_labels(write(tmp_path, "image,viability,day\na.png,1,monday\n", ["a.png"]))


def test_unreadable_empty_and_absent_files_give_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_labels(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is empty"):
        read_labels(write(tmp_path, ""))
    bad = tmp_path / "bin.csv"
    bad.write_bytes(b"\xff\xfe\x00image\x00")
    with pytest.raises(DataError, match="cannot read labels file"):
        read_labels(bad)
    with pytest.raises(DataError, match="no labelled rows"):
        read_labels(write(tmp_path, "image,viability\n"))
    with pytest.raises(DataError, match="image column is empty"):
        read_labels(write(tmp_path, "image,viability\n,1.0\n"))
