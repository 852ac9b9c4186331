"""`nvir-agent dose-response` end to end: valid, weighted and bad CSV files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nvir_agent.cli.main import main

CONC = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]


def write_csv(path, header, rows):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def two_pl(x, hill, ic50):
    return 1.0 / (1.0 + (np.asarray(x) / ic50) ** hill)


def run_json(capsys, *argv):
    rc = main(["dose-response", *map(str, argv), "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def test_dose_response_json_has_the_documented_keys_and_recovers_ic50(tmp_path, capsys):
    csv = write_csv(tmp_path / "dr.csv", "concentration,response",
                    zip(CONC, two_pl(CONC, 1.4, 3.0), strict=True))
    rc, data = run_json(capsys, csv)
    assert rc == 0
    for key in ("model", "ic50", "ic50_se", "ic50_ci95", "hill", "top", "bottom", "rss", "r2",
                "converged"):
        assert key in data
    assert data["model"] == "2pl" and data["converged"] is True
    assert data["ic50"] == pytest.approx(3.0, rel=1e-5)
    assert len(data["ic50_ci95"]) == 2


def test_dose_response_text_output_names_ic50_and_interval(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.repeat(CONC, 3)
    y = two_pl(x, 1.0, 5.0) + rng.normal(0, 0.04, x.size)
    csv = write_csv(tmp_path / "dr.csv", "concentration,response", zip(x, y, strict=True))
    assert main(["dose-response", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "IC50" in out and "95% CI" in out and "21 points" in out


def test_dose_response_uses_weight_column(tmp_path, capsys):
    y = list(two_pl(CONC, 1.0, 2.0))
    y[3] = 3.0  # an outlier the weight column switches off
    w = [1, 1, 1, 0, 1, 1, 1]
    csv = write_csv(tmp_path / "w.csv", "concentration,response,weight",
                    zip(CONC, y, w, strict=True))
    rc, data = run_json(capsys, csv)
    assert rc == 0 and data["n"] == 6
    assert data["ic50"] == pytest.approx(2.0, rel=1e-5)


def test_dose_response_4pl_on_raw_scale(tmp_path, capsys):
    y = 300 + (41000 - 300) * two_pl(CONC, 1.2, 7.0)
    csv = write_csv(tmp_path / "lum.csv", "concentration,response", zip(CONC, y, strict=True))
    rc, data = run_json(capsys, csv, "--model", "4pl")
    assert rc == 0
    assert data["ic50"] == pytest.approx(7.0, rel=1e-4)
    assert data["top"] == pytest.approx(41000, rel=1e-4)


def test_infinite_ic50_is_the_string_inf_in_valid_json(tmp_path, capsys):
    csv = write_csv(tmp_path / "flat.csv", "concentration,response",
                    zip(CONC, [1.0, 0.99, 1.01, 1.0, 0.98, 1.02, 1.01], strict=True))
    rc = main(["dose-response", str(csv), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data["ic50"] == "inf" and data["infinite"] is True
    assert data["ic50_se"] is None and data["ic50_ci95"] == [None, None]


def test_failed_4pl_fit_is_reported_with_exit_code_1(tmp_path, capsys):
    csv = write_csv(tmp_path / "few.csv", "concentration,response", [(1, 1.0), (3, 0.6), (10, 0.1)])
    rc, data = run_json(capsys, csv, "--model", "4pl")
    assert rc == 1
    assert data["converged"] is False and data["ic50"] is None
    assert "at least 5 points" in data["message"]


@pytest.mark.parametrize(
    "content, says",
    [
        ("dose,response\n1,1\n2,0.5\n3,0.1\n", "no 'concentration' column"),
        ("concentration,effect\n1,1\n2,0.5\n3,0.1\n", "no 'response' column"),
        ("concentration,response\n1,1\n2,abc\n3,0.1\n", "line 3: response 'abc' is not a number"),
        ("concentration,response\n1,1\n2,0.5\n", "needs at least 3"),
        ("concentration,response\n1,1\n-2,0.5\n3,0.1\n", "line 3: concentration -2 is negative"),
        ("concentration,response\n1,1\n2,nan\n3,0.1\n", "not a finite number"),
        ("concentration,response,weight\n1,1,1\n2,0.5,-1\n3,0.1,1\n", "weight -1 is negative"),
        ("concentration,response\n5,1\n5,0.5\n5,0.1\n", "two different positive"),
        ("", "is empty"),
    ],
)
def test_bad_csv_gives_a_clear_data_error(tmp_path, capsys, content, says):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    rc = main(["dose-response", str(csv)])
    err = capsys.readouterr().err
    assert rc == 2
    assert says in err and str(csv) in err
    assert "Traceback" not in err


def test_missing_and_binary_files_give_a_clear_error(tmp_path, capsys):
    assert main(["dose-response", str(tmp_path / "nope.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00" * 10)
    assert main(["dose-response", str(binary)]) == 2
    err = capsys.readouterr().err
    assert "Cannot read dose-response file" in err or "not a valid CSV" in err


def test_header_aliases_and_extra_columns_are_accepted(tmp_path, capsys):
    rows = [(c, v, "x") for c, v in zip(CONC, two_pl(CONC, 1.0, 1.5), strict=True)]
    csv = write_csv(tmp_path / "alias.csv", "Concentration_uM,Viability,well", rows)
    rc, data = run_json(capsys, csv)
    assert rc == 0 and math.isclose(data["ic50"], 1.5, rel_tol=1e-5)


# --------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    from test_report_html import populate_store

    return populate_store(tmp_path_factory.mktemp("cli-store") / "agent.sqlite3")


def test_report_command_writes_html_from_the_configured_database(database, tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(f'[storage]\ndatabase = "{database.as_posix()}"\n')
    compounds = tmp_path / "compounds.csv"
    compounds.write_text("compound,dili,cmax_uM\nZorbicin,positive,0.05\nHarmlessol,0,0.5\n")
    out = tmp_path / "r.html"
    rc = main(["--config", str(config), "report", "--compounds", str(compounds),
               "--out", str(out)])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "Zorbicin" in text and "ROC AUC" in text and "Harmlessol" in text


def test_report_command_with_plate_map_folder_from_config(database, tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "p2.csv").write_text(
        "plate,well,role,compound,concentration_uM\nP2,A01,vehicle,DMSO,\n"
        "P2,A02,treated,Solo,1\nP2,B05,treated,Solo,10\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[storage]\ndatabase = "{database.as_posix()}"\n[plates]\nmaps = "maps"\n')
    out = tmp_path / "r.html"
    assert main(["--config", str(config), "report", "--plate", "P2", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "Solo" in text and "Plates without a plate map" not in text


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--plate", "NOPE"], "no analysed images of plate 'NOPE'"),
        (["--day", "42"], "No time point 42"),
        (["--timepoint", "42"], "No time point 42"),
        (["--compounds", "MISSING.csv"], "does not exist"),
    ],
)
def test_report_command_errors_are_clear(database, tmp_path, capsys, extra, says):
    extra = [str(tmp_path / e) if e.endswith(".csv") else e for e in extra]
    rc = main(["report", "--db", str(database), "--out", str(tmp_path / "r.html"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_report_command_without_database_says_how_to_get_one(tmp_path, capsys):
    rc = main(["report", "--db", str(tmp_path / "none.sqlite3"), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert rc != 0 and "There is no database" in err and "nvir-agent run" in err
