"""Messages a user acts on: status lists problems and exits 1, run without
folders exits 2, dose-response warns about raw data under the 2PL, model info
summarises the training history."""

from __future__ import annotations

import json

from nvir_agent.cli.main import main
from nvir_agent.report.doseresponse import scale_warnings


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _config(tmp_path, text: str):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[storage]\ndatabase = "{tmp_path / "db.sqlite3"}"\n' + text,
                   encoding="utf-8")
    return cfg


def test_status_lists_a_missing_model_and_a_missing_folder_and_exits_1(tmp_path, capsys):
    (tmp_path / "acq").mkdir()
    cfg = _config(tmp_path, '[watch]\nfolders = ["acq", "gone"]\n[model]\npath = "nope.safetensors"\n')
    rc, out, _ = cli(capsys, "--config", str(cfg), "status")
    assert rc == 1 and "problems (2):" in out
    assert f"model file {tmp_path / 'nope.safetensors'} does not exist" in out
    assert f"watched folder {tmp_path / 'gone'} does not exist" in out
    rc, out, _ = cli(capsys, "--config", str(cfg), "status", "--json")
    assert rc == 1 and len(json.loads(out)["problems"]) == 2


def test_status_of_a_healthy_setup_exits_0(tmp_path, capsys):
    (tmp_path / "acq").mkdir()
    cfg = _config(tmp_path, '[watch]\nfolders = ["acq"]\n')
    rc, out, _ = cli(capsys, "--config", str(cfg), "status")
    assert rc == 0 and "problems" not in out


def test_status_says_when_the_database_cannot_be_read(tmp_path, capsys):
    (tmp_path / "db.sqlite3").write_bytes(b"this is not a database" * 100)
    rc, out, _ = cli(capsys, "--config", str(_config(tmp_path, "")), "status")
    assert rc == 1 and "cannot be read" in out


def test_run_without_folders_exits_2_and_says_how_to_set_them(tmp_path, capsys):
    rc, _, err = cli(capsys, "--config", str(_config(tmp_path, "")), "run", "--headless")
    assert rc == 2 and "No folders to watch" in err and "[watch]" in err


RAW = "concentration,response\n0.1,52000\n1,50000\n3,41000\n10,20000\n30,6000\n100,3000\n"


def test_dose_response_on_raw_luminescence_warns_and_names_the_fix(tmp_path, capsys):
    data = tmp_path / "lum.csv"
    data.write_text(RAW, encoding="utf-8")
    rc, out, _ = cli(capsys, "dose-response", str(data))
    assert rc == 0 and "warning" in out and "--model 4pl" in out and "normalise" in out
    rc, out, _ = cli(capsys, "dose-response", str(data), "--json")
    assert "--model 4pl" in json.loads(out)["warnings"][0]
    rc, out, _ = cli(capsys, "dose-response", str(data), "--model", "4pl", "--json")
    assert json.loads(out)["warnings"] == []
    assert scale_warnings([1.0, 0.9, 0.4, 0.05], "2pl") == []


def test_model_info_summarises_the_training_history(capsys):
    rc, out, _ = cli(capsys, "model", "info")
    assert rc == 0
    [line] = [line for line in out.splitlines() if line.startswith("training:")]
    assert "epochs" in line and "kept epoch" in line and "final losses" in line
    assert max(len(line) for line in out.splitlines()) < 1000  # no history dump
    rc, out, _ = cli(capsys, "model", "info", "--history")
    assert sum(1 for line in out.splitlines() if line.strip()[:1].isdigit()) >= 10


def test_score_on_unreadable_files_says_none_were_scored(tmp_path, capsys):
    files = []
    for i in range(4):
        f = tmp_path / f"broken{i}.tif"
        f.write_bytes(b"not an image")
        files.append(str(f))
    rc, _, err = cli(capsys, "score", *files)
    assert rc == 1 and "0 of 4 images scored" in err and "4 not scored" in err
