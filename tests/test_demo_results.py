"""End to end on the small demo plate (3 reads, two test compounds, the
positive control): dead wells count at every read, a harmless compound is
reported "> top tested", the well and compound exports and the report carry
the same numbers and their provenance."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict

import pytest

from nvir_agent.cli.main import main
from nvir_agent.demo.run import DemoOptions, run_demo
from nvir_agent.model.locate import demo_model_path
from nvir_agent.model.modelfile import file_sha256

pytestmark = pytest.mark.slow
READS = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    options = DemoOptions.fast(days=READS, size=256, compounds=("Mockomycin", "Nullitide"),
                               keep_database=False)
    return run_demo(root, options)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))


def test_dead_positive_control_wells_are_in_the_well_export_at_every_read(demo, capsys):
    rc, out, _ = cli(capsys, "--config", str(demo.workspace.config), "export", "--level", "well")
    assert rc == 0
    rows = _csv_rows(out)
    positive = [r for r in rows if r["role"] == "positive"]
    reads_of = defaultdict(set)
    for r in positive:
        reads_of[r["well"]].add(int(r["timepoint"]))
    assert reads_of and all(reads == set(range(1, READS + 1)) for reads in reads_of.values())
    included = [r for r in positive if r["included"] == "yes"]
    # the control kills: the wells that count are dead, whatever segmentation flagged
    assert len(included) >= 0.75 * len(positive)
    assert all(float(r["viability_rel_control"]) < 0.3 for r in included)
    for r in positive:
        if r["included"] == "no":
            assert r["exclusion"].startswith("imaging failure") and not r["viability_rel_control"]
    assert all(r["image_paths"].endswith((".TIF", ".tif")) and r["n_images"] == "1"
               for r in positive)
    assert {"compound", "concentration_uM", "group", "viability_rel_baseline",
            "qc_flags"} <= set(rows[0])


def test_a_harmless_compound_is_reported_above_the_top_tested_concentration(demo, capsys):
    rc, out, _ = cli(capsys, "--config", str(demo.workspace.config), "export", "--level",
                     "compound", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and "provenance" in lines[0]
    rows = {(r["compound"], r["timepoint"]): r for r in lines[1:]}
    top = max(demo.truth["compounds"]["Nullitide"]["concentrations_uM"])
    for read in range(1, READS + 1):
        r = rows[("Nullitide", read)]
        assert r["ic50_text"] == f"> {top:g} µM (top tested)" and r["ic50_uM"] is None
        assert r["reliability"] == "above range"
    m = rows[("Mockomycin", READS)]
    assert m["reliability"] == "estimate" and 4 < m["ic50_uM"] < 25
    assert m["ci95_low_uM"] < m["ic50_uM"] < m["ci95_high_uM"]
    # the demo summary says the same as the export
    summary = {r.compound: r for r in demo.ic50 if r.day == READS}
    assert summary["Nullitide"].ic50_text == f"> {top:g} µM (top tested)"


def test_the_report_names_its_model_warns_about_the_demo_model_and_no_dead_path(demo):
    text = demo.report.read_text(encoding="utf-8")
    assert file_sha256(demo_model_path()) in text
    assert "trained on synthetic images only" in text
    assert "temporary demo database, deleted after the run" in text
    assert str(demo.workspace.database) not in text
    assert "&gt; 32 µM (top tested)" in text
    assert not re.search(r"Nullitide</td><td>\d+</td><td>\d", text)  # no finite IC50


def test_xlsx_export_has_one_sheet_per_level_and_the_provenance(demo, capsys, tmp_path):
    from openpyxl import load_workbook

    out = tmp_path / "results.xlsx"
    rc, _, err = cli(capsys, "--config", str(demo.workspace.config), "export", "--format",
                     "xlsx", "--out", str(out))
    assert rc == 0 and "compound rows" in err
    wb = load_workbook(out, read_only=True)
    assert wb.sheetnames == ["image", "well", "compound", "provenance"]
    prov = {r[0]: r[1] for r in wb["provenance"].iter_rows(min_row=2, values_only=True)}
    assert prov["model sha256"] == file_sha256(demo_model_path())
    assert "DEMO model" in prov["warning"]
    well_header = next(wb["well"].iter_rows(max_row=1, values_only=True))
    assert well_header[:5] == ("plate", "well", "timepoint", "elapsed_s", "role")
