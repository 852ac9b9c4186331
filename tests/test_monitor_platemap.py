"""Plate maps: parsing, validation errors, matching and the text layout."""

from __future__ import annotations

import os

import pytest

from nvir_agent.errors import PlateMapError
from nvir_agent.monitor.platemap import (
    PlateMapLibrary,
    expand_wells,
    match_plate,
    parse_csv,
    parse_toml,
    plate_map_from_dict,
    plate_map_to_dict,
    read_plate_maps,
    render_layout,
)

HEADER = "plate,well,role,compound,concentration_uM,group,cmax_uM,unit\n"


def one(text: str, **kw):
    maps = parse_csv(text, source="map.csv", **kw)
    assert len(maps) == 1
    return maps[0]


def test_csv_map_gives_role_compound_and_micromolar_concentration_per_well():
    pm = one(HEADER + "P1,A01,vehicle,DMSO,,,,\nP1,b3,treated,Toxazine,10,,1.5,\n"
                      "P1,B04,treated,Toxazine,500,,,nM\nP1,B05,treated,Toxazine,0.02,,,mM\n")
    assert pm.wells["A01"].role == "vehicle"
    b3 = pm.wells["B03"]
    assert (b3.role, b3.compound, b3.concentration_uM, b3.cmax_uM) == ("treated", "Toxazine",
                                                                       10.0, 1.5)
    assert pm.wells["B04"].concentration_uM == pytest.approx(0.5)
    assert pm.wells["B05"].concentration_uM == pytest.approx(20.0)
    # Cmax given once applies to every well of that compound
    assert pm.wells["B04"].cmax_uM == 1.5
    assert b3.group_label == "Toxazine 10 µM"


def test_explicit_group_label_overrides_compound_and_concentration():
    pm = one(HEADER + "P1,C01,treated,Tox,1,rep-A,,\n")
    assert pm.wells["C01"].group_label == "rep-A"


def test_one_csv_can_describe_several_plates():
    maps = parse_csv(HEADER + "P1,A01,vehicle,,,,,\nP2,A01,vehicle,,,,,\n", source="m.csv")
    assert sorted(m.plate for m in maps) == ["P1", "P2"]


def test_well_ranges_expand_to_rectangles():
    assert expand_wells("B02:C03") == ["B02", "B03", "C02", "C03"]
    pm = one("plate,well,role\nP1,A01:A12,vehicle\n")
    assert len(pm.wells) == 12


@pytest.mark.parametrize(("text", "fmt", "needle"), [
    ("plate,well,role\nP1,I01,vehicle\n", 96, "does not exist on a 96-well plate"),
    ("plate,well,role\nP1,A13,vehicle\n", 96, "does not exist on a 96-well plate"),
    ("plate,well,role\nP1,Q01,vehicle\n", 384, "does not exist on a 384-well plate"),
    ("plate,well,role\nP1,AG01,vehicle\n", 1536, "not a well name"),
    ("plate,well,role\nP1,XYZ,vehicle\n", 96, "not a well name"),
])
def test_unknown_well_for_the_plate_format_is_reported_with_line(text, fmt, needle):
    with pytest.raises(PlateMapError) as err:
        parse_csv(text, source="map.csv", plate_format=fmt)
    assert needle in err.value.message
    assert "map.csv: line 2" in err.value.message


def test_1536_well_plates_accept_double_letter_rows():
    pm = one("plate,well,role\nP1,AF48,vehicle\n", plate_format=1536)
    assert "AF48" in pm.wells


def test_concentration_without_compound_is_an_error():
    with pytest.raises(PlateMapError, match="line 2: a concentration .* without a compound"):
        parse_csv("plate,well,role,compound,concentration_uM\nP1,A01,treated,,5\n",
                  source="map.csv")


def test_duplicate_well_names_both_lines():
    with pytest.raises(PlateMapError) as err:
        parse_csv("plate,well,role\nP1,A01,vehicle\nP1,a1,vehicle\n", source="map.csv")
    assert "listed twice" in err.value.message
    assert "line 3" in err.value.message and "line 2" in err.value.message


def test_unknown_role_lists_the_known_roles():
    with pytest.raises(PlateMapError) as err:
        parse_csv("plate,well,role\nP1,A01,control\n", source="map.csv")
    assert "unknown role 'control'" in err.value.message
    assert "vehicle" in err.value.hint


@pytest.mark.parametrize(("text", "needle"), [
    ("well,role\nA01,vehicle\n", "header lacks plate"),
    ("", "empty"),
    ("plate,well,role,compound,concentration_uM\nP1,A01,treated,X,lots\n", "not usable"),
    ("plate,well,role,compound,concentration_uM,unit\nP1,A01,treated,X,1,furlong\n",
     "unknown concentration unit"),
    ("plate,well,role,compound,concentration_uM\nP1,A01,treated,X,-1\n", "negative"),
    ("plate,well,role\nP1,A01,treated\n", "needs a compound"),
    ("plate,well,role\n", "no wells"),
])
def test_malformed_csv_gives_a_clear_error(text, needle):
    with pytest.raises(PlateMapError, match=needle):
        parse_csv(text, source="map.csv")


TOML = """
plate = "DEMO*"
format = 96
dosing_timepoint = 2
[cmax_uM]
Toxazine = 2.0
[[wells]]
wells = "A01:A06"
role = "vehicle"
[[wells]]
wells = ["B01", "B02", "B03"]
role = "treated"
compound = "Toxazine"
concentration = 300
unit = "nM"
"""


def test_toml_map_with_ranges_units_cmax_and_dosing_time():
    (pm,) = parse_toml(TOML, source="demo.toml")
    assert pm.plate == "DEMO*" and pm.dosing_timepoint == 2
    assert len([a for a in pm.wells.values() if a.role == "vehicle"]) == 6
    assert pm.wells["B02"].concentration_uM == pytest.approx(0.3)
    assert pm.wells["B02"].cmax_uM == 2.0


def test_toml_unknown_key_and_bad_well_are_errors():
    with pytest.raises(PlateMapError, match="unknown key 'colour'"):
        parse_toml('plate = "P"\ncolour = 1\n[[wells]]\nwells="A01"\nrole="vehicle"\n')
    with pytest.raises(PlateMapError, match=r"entry 1: well 'I05' does not exist"):
        parse_toml('plate = "P"\n[[wells]]\nwells="I05"\nrole="vehicle"\n')
    with pytest.raises(PlateMapError, match="not valid TOML"):
        parse_toml('plate = "P\n')


def test_read_plate_maps_names_missing_and_wrongly_typed_files(tmp_path):
    with pytest.raises(PlateMapError, match="does not exist"):
        read_plate_maps(tmp_path / "nope.csv")
    bad = tmp_path / "map.xlsx"
    bad.write_bytes(b"PK\x03\x04")
    with pytest.raises(PlateMapError, match="neither .csv nor .toml"):
        read_plate_maps(bad)
    binary = tmp_path / "map.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PlateMapError, match="not UTF-8"):
        read_plate_maps(binary)


def test_exact_plate_id_wins_over_glob_and_longest_glob_wins(tmp_path):
    (tmp_path / "a.csv").write_text("plate,well,role\nDEMO-1,A01,vehicle\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("plate,well,role\nDEMO*,A02,vehicle\n", encoding="utf-8")
    (tmp_path / "c.csv").write_text("plate,well,role\nDEMO-2*,A03,vehicle\n", encoding="utf-8")
    lib = PlateMapLibrary(tmp_path)
    assert "A01" in lib.for_plate("DEMO-1").wells
    assert "A03" in lib.for_plate("DEMO-22").wells
    assert "A02" in lib.for_plate("DEMO-9").wells
    assert lib.for_plate("OTHER") is None


def test_library_skips_a_broken_file_and_rereads_changed_ones(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("plate,well,role\nP1,A01,vehicle\n", encoding="utf-8")
    (tmp_path / "broken.csv").write_text("plate,well,role\nP2,A01,nonsense\n", encoding="utf-8")
    lib = PlateMapLibrary(tmp_path)
    assert lib.for_plate("P1") is not None and lib.for_plate("P2") is None
    assert any("nonsense" in e for e in lib.errors)
    good.write_text("plate,well,role\nP1,A01,vehicle\nP1,A02,vehicle\n", encoding="utf-8")
    os.utime(good, (1e9, 1e9))
    assert len(lib.for_plate("P1").wells) == 2


def test_match_plate_without_maps_is_none():
    assert match_plate("P1", []) is None


def test_layout_shows_grid_codes_and_legend():
    pm = one(HEADER + "P1,A01:A03,vehicle,,,,,\nP1,B01,treated,Toxazine,1,,,\n"
                      "P1,B02,treated,Toxazine,10,,,\nP1,H12,empty,,,,,\n"
                      "P1,C01,positive,Tamoxifen,50,,,\n")
    text = render_layout(pm)
    lines = text.splitlines()
    header = lines[1].split()
    assert header[0] == "1" and header[-1] == "12"
    row_a = next(line for line in lines if line.strip().startswith("A "))
    assert row_a.split()[1:4] == ["V", "V", "V"]
    row_b = next(line for line in lines if line.strip().startswith("B "))
    assert row_b.split()[1:3] == ["To1", "To2"]
    assert "To  Toxazine (treated): 1=1, 2=10 µM" in text
    assert "Ta  Tamoxifen (positive)" in text
    assert "3 vehicle" in text and "1 empty" in text


def test_plate_map_survives_a_round_trip_through_json():
    pm = parse_toml(TOML, source="demo.toml")[0]
    assert plate_map_from_dict(plate_map_to_dict(pm)) == pm
