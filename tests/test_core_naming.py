"""File names from every supported imager → plate, well, time point, field, channel, z."""

from __future__ import annotations

import pytest

from nvir_agent.errors import NamingError
from nvir_agent.ingest.filenames import is_candidate, parse_path, plate_from_folders, try_parse_path
from nvir_agent.plate import ImageKey, parse_well, well_name

GUID = "46C9B2CD-0BB3-4AFC-B7FD-1F6C7C08E4F7"


def key(path: str, preset: str = "auto", regex: str | None = None) -> dict:
    return parse_path(path, preset, regex).as_dict()


def sub(d: dict, *names: str) -> tuple:
    return tuple(d[n] for n in names)


# --- ImageXpress ---------------------------------------------------------------------------


def test_imagexpress_plate_well_site_wavelength():
    k = key("PLATE1_B03_s1_w1.TIF")
    assert sub(k, "vendor", "plate", "well", "row", "column", "field", "channel") == (
        "imagexpress", "PLATE1", "B03", 2, 3, 1, "1")
    assert k["timepoint"] is None and k["z"] is None


def test_imagexpress_name_with_guid_suffix():
    k = key(f"MIP-2P-2sub_C05_s2_w2{GUID}.tif")
    assert sub(k, "vendor", "plate", "well", "field", "channel") == (
        "imagexpress", "MIP-2P-2sub", "C05", 2, "2")


def test_imagexpress_guid_starting_with_digits_keeps_single_digit_wavelength():
    k = key("P_A01_s3_w4" + "12345678-0BB3-4AFC-B7FD-1F6C7C08E4F7.tif")
    assert sub(k, "well", "field", "channel") == ("A01", 3, "4")


def test_imagexpress_timepoint_and_zstep_folders():
    k = key("/data/PLATE7/2024-05-01/4431/TimePoint_12/ZStep_3/PLATE7_H11_s4_w1.TIF")
    assert sub(k, "plate", "well", "timepoint", "z", "field") == ("PLATE7", "H11", 12, 3, 4)


def test_imagexpress_name_without_plate_takes_plate_folder_above_date_and_id():
    k = key("/data/LiverTox-03/2024-05-01/4431/TimePoint_2/B03_s1_w1.TIF")
    assert sub(k, "vendor", "plate", "well", "timepoint", "field") == (
        "imagexpress", "LiverTox-03", "B03", 2, 1)


def test_imagexpress_windows_path_with_timepoint_folder():
    k = key("D:\\MD\\P7\\20240501\\TimePoint_2\\P7_H12_s3_w2.tif")
    assert sub(k, "plate", "well", "timepoint", "field", "channel") == ("P7", "H12", 2, 3, "2")


def test_plate_name_containing_a_well_like_token_keeps_the_last_well():
    k = key("EXP_A01_B03_s1_w1.tif")
    assert sub(k, "plate", "well") == ("EXP_A01", "B03")


# --- Harmony ---------------------------------------------------------------------------


def test_harmony_row_column_field_plane_channel_timepoint():
    k = key("r02c03f01p01-ch1sk1fk1fl1.tiff")
    assert sub(k, "vendor", "well", "row", "column", "field", "z", "channel", "timepoint") == (
        "harmony", "B03", 2, 3, 1, 1, "1", 1)


def test_harmony_plate_from_measurement_folder_above_images():
    k = key("/exp/HepG2_plate4__2024-03-01T10_00_00-Measurement 1/Images/"
            "r16c24f09p03-ch2sk7fk1fl1.tiff")
    assert sub(k, "plate", "well", "field", "z", "channel", "timepoint") == (
        "HepG2_plate4__2024-03-01T10_00_00-Measurement 1", "P24", 9, 3, "2", 7)


def test_harmony_upper_case_name():
    assert key("R02C03F01P01-CH1SK1FK1FL1.TIFF")["well"] == "B03"


# --- CellVoyager, Cytation, Incucyte, Cellomics -----------------------------------------


def test_cellvoyager_name():
    k = key("Plate_B02_T0001F001L01A01Z01C02.tif")
    assert sub(k, "vendor", "plate", "well", "timepoint", "field", "z", "channel") == (
        "cellvoyager", "Plate", "B02", 1, 1, 1, "2")


def test_cellvoyager_later_timepoint_and_plane():
    k = key("AssayPlate_003_P24_T0012F004L01A02Z05C01.tif")
    assert sub(k, "plate", "well", "timepoint", "field", "z", "channel") == (
        "AssayPlate_003", "P24", 12, 4, 5, "1")


def test_cytation_unpadded_well_channel_with_space_and_time_index():
    k = key("/gen5/Spheroids_plate2/B5_03_1_1_Bright Field_001.tif")
    assert sub(k, "vendor", "plate", "well", "column", "field", "channel", "timepoint") == (
        "cytation", "Spheroids_plate2", "B05", 5, 1, "Bright Field", 1)


def test_cytation_later_read():
    k = key("H12_02_2_3_Phase Contrast_014.tif")
    assert sub(k, "well", "field", "channel", "timepoint") == ("H12", 3, "Phase Contrast", 14)


def test_incucyte_vessel_channel_well_field_and_elapsed_time():
    k = key("VID1957_phase_E11_5_06d12h05m.tif")
    assert sub(k, "vendor", "plate", "well", "field", "channel") == (
        "incucyte", "VID1957", "E11", 5, "phase")
    assert k["elapsed_s"] == 6 * 86400 + 12 * 3600 + 5 * 60


def test_incucyte_export_without_vessel_takes_plate_folder():
    k = key("/exports/HepaRG_run4/phase_A1_1_00d04h00m.tif")
    assert sub(k, "plate", "well", "elapsed_s") == ("HepaRG_run4", "A01", 14400.0)


def test_cellomics_name():
    k = key("PLATE_090915160001_A01f00d0.tif")
    assert sub(k, "vendor", "plate", "well", "field", "channel") == (
        "cellomics", "PLATE_090915160001", "A01", 0, "0")


def test_cellomics_upper_case_field_and_channel_letters():
    assert sub(key("MFGTMP_140206180002_P24F05D2.TIF"), "well", "field", "channel") == (
        "P24", 5, "2")


# --- plate formats, presets, regex ---------------------------------------------------------


def test_1536_well_rows_reach_af_and_columns_48():
    k = key("P_AF48_s1_w1.tif")
    assert sub(k, "well", "row", "column") == ("AF48", 32, 48)
    assert key("P_AA01_s1.tif")["row"] == 27


@pytest.mark.parametrize("name", ["P_AG01_s1_w1.tif", "P_B49_s1_w1.tif", "P_B00_s1.tif"])
def test_wells_outside_a_1536_plate_are_rejected(name):
    with pytest.raises(NamingError):
        parse_path(name)


@pytest.mark.parametrize("name", [
    "notes.tif", "scan.tiff", "r02c03.tiff", "Plate_B02_T01F001.tif", "b03_s1_w1.tif",
    "PLATE1-B03-s1.tif", "", "_.tif",
])
def test_malformed_names_raise_a_naming_error_that_says_what_to_set(name):
    with pytest.raises(NamingError) as exc:
        parse_path(name)
    assert "watch.naming" in exc.value.hint and "watch.regex" in exc.value.hint


def test_try_parse_gives_an_empty_key_for_an_unknown_name():
    assert try_parse_path("notes.tif") == ImageKey()


def test_a_fixed_preset_does_not_fall_back_to_others():
    with pytest.raises(NamingError):
        parse_path("PLATE1_B03_s1_w1.TIF", "harmony")
    assert key("PLATE1_B03_s1_w1.TIF", "imagexpress")["well"] == "B03"


def test_unknown_preset_is_a_naming_error():
    with pytest.raises(NamingError, match="Unknown naming preset"):
        parse_path("PLATE1_B03_s1_w1.TIF", "zeiss")


def test_user_regex_with_named_groups_and_elapsed_hours():
    rx = r"(?P<plate>[^-]+)-(?P<well>[A-P]\d{1,2})-(?P<hours>\d+)h"
    k = key("Run7-D4-48h.png", "regex", rx)
    assert sub(k, "vendor", "plate", "well", "elapsed_s") == ("custom", "Run7", "D04", 172800.0)


def test_user_regex_with_numeric_row_and_column():
    k = key("img_row3_col12_t5.tif", "auto", r"row(?P<row>\d+)_col(?P<column>\d+)_t(?P<timepoint>\d+)")
    assert sub(k, "well", "timepoint") == ("C12", 5)


def test_user_regex_is_tried_before_presets_in_auto():
    k = key("PLATE1_B03_s1_w1.TIF", "auto", r"^(?P<plate>\w+?)_(?P<well>[A-P]\d{2})")
    assert k["vendor"] == "custom"


def test_user_regex_may_match_folders_in_the_path():
    k = key("/acq/PlateQ/day3/G07.tif", "regex",
            r"/(?P<plate>Plate\w+)/day(?P<timepoint>\d+)/(?P<well>[A-P]\d{2})\.tif$")
    assert sub(k, "plate", "timepoint", "well") == ("PlateQ", 3, "G07")


def test_regex_preset_without_regex_is_an_error():
    with pytest.raises(NamingError, match="watch.regex is empty"):
        parse_path("x.tif", "regex")


# --- helpers ---------------------------------------------------------------------------


def test_well_helpers_round_trip():
    assert parse_well("b3") == (2, 3)
    assert well_name(2, 3) == "B03"
    assert well_name(*parse_well("AF48")) == "AF48"
    with pytest.raises(ValueError):
        parse_well("Z99")


def test_plate_from_folders_skips_structural_folders():
    assert plate_from_folders("/d/PlateZ/2024-01-02/991/TimePoint_1/x.tif") == "PlateZ"
    assert plate_from_folders("/x.tif") is None


@pytest.mark.parametrize("name, expected", [
    ("PLATE1_B03_s1_w1.TIF", True),
    ("plate1_b03.PNG", True),
    ("PLATE1_B03_s1_w1_thumb46C9B2CD.tif", False),
    ("~$PLATE1_B03.tif", False),
    ("PLATE1_B03.tif.part", False),
    ("PLATE1_B03.tmp", False),
    (".hidden.tif", False),
    ("PLATE1_B03.HTD", False),
    ("notes.txt", False),
])
def test_candidate_rules_skip_previews_temporary_and_foreign_files(name, expected):
    patterns = ["*.tif", "*.tiff", "*.png"]
    assert is_candidate(f"/acq/{name}", patterns, [".*"]) is expected


def test_parse_well_checks_the_plate_format_when_given():
    assert parse_well("P24", 384) == (16, 24)
    with pytest.raises(ValueError, match="does not exist on a 96-well plate"):
        parse_well("P24", 96)
    with pytest.raises(ValueError, match="not a well name"):
        parse_well("AG01", 1536)
