"""`nvir-agent synth …` end to end on tiny frames."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import tifffile

from nvir_agent.cli.main import main
from nvir_agent.ingest.filenames import parse_path


def test_synth_render_writes_an_image_and_its_mask(tmp_path, capsys):
    out, mask = tmp_path / "one.png", tmp_path / "mask.png"
    assert main(["synth", "render", str(out), "--viability", "0.4", "--size", "128",
                 "--mask-out", str(mask)]) == 0
    img = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    assert img.shape == m.shape == (128, 128)
    assert img[m > 0].mean() < img[m == 0].mean()
    assert "viability 0.4" in capsys.readouterr().out


def test_synth_render_16_bit_tiff_and_json_params(tmp_path, capsys):
    out = tmp_path / "one.tif"
    assert main(["synth", "render", str(out), "--viability", "1", "--size", "64",
                 "--bits", "16", "--json"]) == 0
    assert tifffile.imread(out).dtype == np.uint16
    assert json.loads(capsys.readouterr().out)["bits"] == 16


def test_synth_dataset_writes_labels_relative_to_out(tmp_path, capsys):
    assert main(["synth", "dataset", str(tmp_path / "ds"), "--n", "6", "--size", "64",
                 "--masks", "--seed", "3"]) == 0
    with open(tmp_path / "ds" / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert all((tmp_path / "ds" / r["image"]).is_file() for r in rows)
    assert all((tmp_path / "ds" / r["mask"]).is_file() for r in rows)
    assert "wrote 6 images" in capsys.readouterr().out


def test_synth_plate_writes_reads_truth_and_the_demo_map(tmp_path):
    out = tmp_path / "acq"
    assert main(["synth", "plate", str(out), "--days", "2", "--size", "48"]) == 0
    files = sorted(out.rglob("*.TIF"))
    assert len(files) == 2 * 96  # every well of the demo plate is imaged, 2 reads
    key = parse_path(files[0].relative_to(out), "imagexpress")
    assert key.plate == "DEMO-P1" and key.timepoint in (1, 2)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["compounds"]["Fictazine"]["toxic"] is True
    assert (out / "platemap.csv").is_file()


def test_synth_plate_with_user_map_and_compounds(tmp_path):
    pm = tmp_path / "map.csv"
    pm.write_text("plate,well,role,compound,concentration_uM\nQ7,A01,vehicle,,\n"
                  "Q7,A02,treated,Zapp,10\n")
    comp = tmp_path / "c.csv"
    comp.write_text("compound,ic50_uM,hill,onset_day\nZapp,1,2,1\n")
    assert main(["synth", "plate", str(tmp_path / "acq"), "--plate-map", str(pm),
                 "--compounds", str(comp), "--days", "1", "--size", "48",
                 "--naming", "incucyte"]) == 0
    names = sorted(p.name for p in (tmp_path / "acq").rglob("*.tif"))
    assert names == ["Q7_phase_A1_1_01d00h00m.tif", "Q7_phase_A2_1_01d00h00m.tif"]


def test_synth_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["synth", "render", str(tmp_path / "x.png"), "--viability", "-1"]) == 2
    assert main(["synth", "plate", str(tmp_path / "a"), "--plate-map",
                 str(tmp_path / "missing.csv")]) == 2
    assert main(["synth", "dataset", str(tmp_path / "d"), "--n", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("nvir-agent: error:") == 3


def test_synth_platemap_writes_the_demo_layout(tmp_path):
    out = tmp_path / "map.csv"
    assert main(["synth", "platemap", str(out), "--plate", "X1"]) == 0
    assert out.read_text().count("\nX1,") == 96
