"""process, status, export, names and paths end to end through the command line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from nvir_agent.cli.main import main


def records(jsonl: str) -> list[dict]:
    """JSON-lines export rows, without the leading provenance record."""
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert "agent" in rows[0]["provenance"] and "database" in rows[0]["provenance"]
    return rows[1:]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def spheroid(dtype: type) -> np.ndarray:
    """A dark round body on a lighter background, like a bright-field spheroid."""
    scale = 255 if dtype is np.uint8 else 4095
    img = np.full((256, 320), 0.65 * scale, np.float32)
    cv2.circle(img, (165, 125), 60, 0.15 * scale, -1)
    img += np.random.default_rng(0).normal(0, 0.01 * scale, img.shape)
    return np.clip(img, 0, scale).astype(dtype)


@pytest.fixture
def acquisition(tmp_path) -> dict[str, Path]:
    """A small ImageXpress-style plate: good PNG and TIFF, a corrupt and a truncated file."""
    tp = tmp_path / "acq" / "PLATE1" / "2024-05-01" / "77" / "TimePoint_2"
    tp.mkdir(parents=True)
    png = tp / "PLATE1_B03_s1_w1.png"
    cv2.imwrite(str(png), spheroid(np.uint8))
    tif = tp / "PLATE1_B04_s1_w1.tif"
    tifffile.imwrite(tif, spheroid(np.uint16))
    corrupt = tp / "PLATE1_B05_s1_w1.tif"
    corrupt.write_bytes(b"not an image at all")
    truncated = tp / "PLATE1_B06_s1_w1.png"
    truncated.write_bytes(png.read_bytes()[:40])
    (tp / "PLATE1_B03_s1_w1_thumb.png").write_bytes(png.read_bytes())
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[watch]\nfolders = ["acq"]\n[storage]\ndatabase = "{tmp_path / "db.sqlite3"}"\n',
        encoding="utf-8")
    return {"cfg": cfg, "root": tmp_path / "acq", "png": png, "tif": tif,
            "corrupt": corrupt, "truncated": truncated}


def test_process_json_prints_one_line_per_image_with_key_status_and_error(acquisition, capsys):
    a = acquisition
    rc, out, err = cli(capsys, "--config", str(a["cfg"]), "process", str(a["root"]), "--json")
    assert rc == 0
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert set(rows) == {p.name for p in (a["png"], a["tif"], a["corrupt"], a["truncated"])}
    good = rows[a["png"].name]
    assert (good["plate"], good["well"], good["timepoint"], good["status"], good["error"]) == (
        "PLATE1", "B03", 2, "ok", None)
    assert {"found", "qc", "viability", "model"} <= set(good)
    assert rows[a["tif"].name]["status"] == "ok"
    for bad in ("corrupt", "truncated"):
        row = rows[a[bad].name]
        assert row["status"] == "failed"
        assert a[bad].name in row["error"]
    assert "4 images" in err and "Traceback" not in err


def test_process_twice_does_not_analyse_again_unless_forced(acquisition, capsys):
    a = acquisition
    cli(capsys, "--config", str(a["cfg"]), "process", str(a["png"]), "--json")
    cli(capsys, "--config", str(a["cfg"]), "process", str(a["png"]), "--json")
    rc, out, _ = cli(capsys, "--config", str(a["cfg"]), "export", "--format", "jsonl")
    [row] = records(out)
    assert row["attempts"] == 1
    cli(capsys, "--config", str(a["cfg"]), "process", "--force", str(a["png"]))
    _, out, _ = cli(capsys, "--config", str(a["cfg"]), "export", "--format", "jsonl")
    [again] = records(out)
    assert again["updated_at"] > row["updated_at"] and again["state"] == "done"


def test_process_of_a_missing_path_is_a_usage_error(acquisition, capsys):
    rc, out, err = cli(capsys, "--config", str(acquisition["cfg"]), "process", "/no/such.tif")
    assert rc == 2 and "/no/such.tif is neither a file nor a folder" in err
    assert out == "" and "Traceback" not in err


def test_status_counts_images_by_state(acquisition, capsys):
    a = acquisition
    cli(capsys, "--config", str(a["cfg"]), "process", str(a["root"]))
    rc, out, _ = cli(capsys, "--config", str(a["cfg"]), "status", "--json")
    st = json.loads(out)
    assert rc == 0
    assert (st["seen"], st["done"], st["failed"], st["pending"]) == (4, 2, 2, 0)
    assert st["running"] is False and st["database"].endswith("db.sqlite3")
    assert [f["health"] for f in st["folders"]] == ["not running"]
    rc, out, _ = cli(capsys, "--config", str(a["cfg"]), "status")
    assert "4 seen, 2 done, 2 failed, 0 pending" in out and "not running" in out


def test_status_before_any_image_shows_zero_and_the_database_path(tmp_path, capsys):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[storage]\ndatabase = "{tmp_path / "new.sqlite3"}"\n', encoding="utf-8")
    rc, out, _ = cli(capsys, "--config", str(cfg), "status")
    assert rc == 0 and "0 seen" in out and str(tmp_path / "new.sqlite3") in out


def test_export_csv_has_key_state_and_measurement_columns(acquisition, capsys, tmp_path):
    a = acquisition
    cli(capsys, "--config", str(a["cfg"]), "process", str(a["root"]))
    out_file = tmp_path / "export.csv"
    rc, _, err = cli(capsys, "--config", str(a["cfg"]), "export", "--out", str(out_file))
    assert rc == 0 and "Exported 4 images" in err
    text = out_file.read_text(encoding="utf-8")
    assert text.startswith("# agent: NViR Agent")  # provenance first, as comment lines
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    assert len(rows) == 4
    assert {"path", "plate", "well", "timepoint", "state", "error", "viability",
            "found"} <= set(rows[0])
    by_well = {r["well"]: r for r in rows}
    assert by_well["B03"]["state"] == "done" and by_well["B03"]["timepoint"] == "2"
    assert by_well["B05"]["state"] == "failed" and by_well["B05"]["error"]


def test_export_jsonl_to_stdout(acquisition, capsys):
    a = acquisition
    cli(capsys, "--config", str(a["cfg"]), "process", str(a["tif"]))
    rc, out, _ = cli(capsys, "--config", str(a["cfg"]), "export", "--format", "jsonl")
    [row] = records(out)
    assert rc == 0 and row["well"] == "B04" and row["state"] == "done"


def test_export_without_a_database_explains_how_to_create_one(tmp_path, capsys):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[storage]\ndatabase = "{tmp_path / "none.sqlite3"}"\n', encoding="utf-8")
    rc, _, err = cli(capsys, "--config", str(cfg), "export")
    assert rc == 1 and "no database" in err and "nvir-agent process" in err


def test_names_json_gives_every_key_and_an_error_for_unknown_names(capsys):
    rc, out, _ = cli(capsys, "names", "--json", "VID1957_phase_E11_5_06d12h05m.tif",
                     "/d/P/2024-01-01/9/TimePoint_4/P_C02_s2_w1.tif", "holiday.jpg")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(rows) == 3
    keys = ["path", "vendor", "plate", "well", "row", "column", "field", "channel", "z",
            "timepoint", "elapsed_s"]
    assert list(rows[0]) == keys
    assert (rows[0]["vendor"], rows[0]["well"], rows[0]["elapsed_s"]) == (
        "incucyte", "E11", 561900.0)
    assert (rows[1]["vendor"], rows[1]["timepoint"], rows[1]["field"]) == ("imagexpress", 4, 2)
    assert rows[2]["vendor"] is None and rows[2]["well"] is None
    assert "holiday.jpg" in rows[2]["error"]


def test_names_with_a_preset_option_and_plain_output(capsys):
    rc, out, _ = cli(capsys, "names", "--preset", "harmony", "r02c03f01p01-ch1sk1fk1fl1.tiff",
                     "PLATE1_B03_s1_w1.TIF")
    first, second = out.splitlines()
    assert rc == 0
    assert "vendor=harmony" in first and "well=B03" in first
    assert "matches no known naming scheme" in second


def test_names_uses_the_regex_from_the_config(tmp_path, capsys):
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[watch]\nnaming = \"regex\"\n"
                   "regex = '(?P<plate>\\w+)-(?P<well>[A-H]\\d+)-d(?P<timepoint>\\d+)'\n",
                   encoding="utf-8")
    _, out, _ = cli(capsys, "--config", str(cfg), "names", "--json", "tox1-G7-d3.png")
    row = json.loads(out)
    assert (row["vendor"], row["plate"], row["well"], row["timepoint"]) == (
        "custom", "tox1", "G07", 3)


def test_paths_lists_config_database_and_folders(tmp_path, capsys):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[storage]\ndatabase = "{tmp_path / "x.sqlite3"}"\n', encoding="utf-8")
    rc, out, _ = cli(capsys, "--config", str(cfg), "paths")
    assert rc == 0
    assert f"config:   {cfg}" in out and str(tmp_path / "x.sqlite3") in out
    assert "log:" in out and "cache:" in out


def test_status_says_which_model_scores_or_how_to_get_one(tmp_path, capsys):
    missing = tmp_path / "no-such-model.safetensors"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[storage]\ndatabase = "{tmp_path / "s.sqlite3"}"\n[model]\npath = "{missing}"\n',
        encoding="utf-8",
    )
    rc, out, _ = cli(capsys, "--config", str(cfg), "status")
    assert rc == 1 and f"model:     model {missing}" in out  # named, and a problem
    assert f"model file {missing} does not exist" in out
    cfg.write_text(
        f'[storage]\ndatabase = "{tmp_path / "s.sqlite3"}"\n[model]\nenabled = false\n',
        encoding="utf-8",
    )
    rc, out, _ = cli(capsys, "--config", str(cfg), "status", "--json")
    assert "switched off" in json.loads(out)["model"]


def test_exit_codes_are_chosen_by_error_class():
    from nvir_agent.cli.main import exit_code
    from nvir_agent.errors import (
        AgentError,
        ConfigError,
        DataError,
        ImageReadError,
        ModelLoadError,
        PlateMapError,
        StoreError,
        TrainingInterrupted,
        UsageError,
    )

    for cls in (UsageError, ConfigError, DataError, ModelLoadError, PlateMapError):
        assert exit_code(cls("x")) == 2
    assert exit_code(TrainingInterrupted("x")) == 130
    for cls in (AgentError, StoreError, ImageReadError):
        assert exit_code(cls("x")) == 1
