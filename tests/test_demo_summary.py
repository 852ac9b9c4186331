"""The demo's set-up and its comparison with the renderer's ground truth (no engine)."""

from __future__ import annotations

import math

import pytest

from nvir_agent.cli.main import main
from nvir_agent.config import AlertsConfig, load_config
from nvir_agent.demo.run import DemoOptions, demo_compounds, prepare_workspace, simulation
from nvir_agent.demo.summary import (
    check_against_truth,
    expectation,
    fit_text,
    format_summary,
    summarise,
)
from nvir_agent.errors import DataError
from nvir_agent.monitor.alerts import Alert
from nvir_agent.monitor.platemap import read_plate_maps
from nvir_agent.report.dili import ViabilityRecord, fit_compounds
from nvir_agent.report.html import Ic50Row, ic50_rows
from nvir_agent.synth.plate import Compound

CFG = AlertsConfig()


def _alert(i: int, compound: str | None, conc: float | None, *, since: int = 2,
           severity: str = "warning", subject: str = "group:x", rule: str = "viability",
           state: str = "open") -> Alert:
    details = {"since": since}
    if compound:
        details.update(compound=compound, concentration_uM=conc)
    return Alert(i, "DEMO-P1", subject, rule, severity, state, f"alert {i}", 0.5, since,
                 0.0, 0.0, None, details)


def _fit(compound: str, day: int, ic50: float, ci=(1.0, 4.0), converged: bool = True,
         infinite: bool = False) -> Ic50Row:
    return Ic50Row(compound, day, ic50, ci, converged, infinite, n_concentrations=4)


@pytest.fixture()
def truth(tmp_path):
    opts = DemoOptions(days=3, compounds=("Fictazine", "Shamacil"))
    ws = prepare_workspace(tmp_path / "demo", opts)
    return simulation(ws, opts).truth()


def test_workspace_holds_a_valid_config_watching_the_acquisition_folder(tmp_path):
    ws = prepare_workspace(tmp_path / "demo", DemoOptions())
    cfg = load_config(ws.config)
    assert cfg.resolve(cfg.watch.folders[0]) == ws.acquisition
    assert cfg.watch.naming == "imagexpress"
    assert cfg.resolve(cfg.storage.database) == ws.database
    assert cfg.resolve(cfg.plates.maps) == ws.plate_maps
    assert cfg.model.path == ""  # the bundled demo model
    [pm] = read_plate_maps(ws.plate_maps / "DEMO-P1.csv")
    roles = [a.role for a in pm.wells.values()]
    assert len(pm.wells) == 96
    assert roles.count("vehicle") >= 8 and roles.count("positive") >= 1
    treated = {(a.compound, a.concentration_uM) for a in pm.wells.values() if a.role == "treated"}
    assert len({c for c, _ in treated}) == 6
    assert all(sum(1 for a in pm.wells.values() if (a.compound, a.concentration_uM) == g) == 3
               for g in treated)


def test_workspace_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(DataError, match="not an empty folder"):
        prepare_workspace(tmp_path, DemoOptions())


def test_smaller_plate_keeps_only_the_chosen_compounds(truth):
    assert {n for n, c in truth["compounds"].items() if c["concentrations_uM"]} == {
        "Killitox", "Fictazine", "Shamacil"}


def test_unknown_compound_is_a_usage_error_naming_the_choices(capsys, tmp_path):
    rc = main(["demo", "--headless", "--keep", str(tmp_path / "d"), "--compounds", "Aspirin"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Aspirin" in err and "Fictazine" in err


def test_demo_without_any_model_stops_before_streaming_and_names_the_missing_file(
        capsys, tmp_path, monkeypatch):
    from nvir_agent.model import locate

    monkeypatch.setattr(locate, "demo_model_path", lambda: tmp_path / "absent.safetensors")
    keep = tmp_path / "d"
    rc = main(["demo", "--fast", "--headless", "--keep", str(keep)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "absent.safetensors" in err and "--model" in err
    assert not any((keep / "acquisition").iterdir())


def test_expectation_follows_the_dose_response_curve_and_onset():
    tox = Compound("T", ic50_uM=2.0, hill=1.5, onset_day=1)
    late = Compound("L", ic50_uM=5.0, hill=1.8, onset_day=5)
    assert expectation(tox, 32.0, [1, 2, 3], CFG) == "alert"
    assert expectation(tox, 0.5, [1, 2, 3], CFG) == "quiet"
    assert expectation(Compound("H"), 32.0, [1, 2, 3], CFG) == "quiet"
    assert expectation(late, 32.0, [1, 2, 3, 4, 5], CFG) == "borderline"  # one toxic read only
    assert expectation(late, 32.0, [1, 2, 3, 4, 5, 6], CFG) == "alert"


def test_check_finds_missed_groups_false_alarms_and_far_ic50(truth):
    compounds = demo_compounds(("Fictazine", "Shamacil"))
    alerts = [_alert(1, "Fictazine", 32.0), _alert(2, "Shamacil", 2.0),
              _alert(3, None, None, subject="plate", rule="control_cv")]
    check = check_against_truth(truth, compounds, alerts, [_fit("Fictazine", 3, 5.0)], CFG)
    assert ("Fictazine", 32.0) not in check.missed
    assert ("Fictazine", 8.0) in check.missed
    assert any("Shamacil" in f for f in check.false_alarms)
    assert any("control_cv" in f for f in check.false_alarms)
    assert check.ic50 == [("Fictazine", 2.0, 5.0, False)]
    assert not check.ok


def test_check_passes_when_alerts_and_fit_match_the_truth(truth):
    compounds = demo_compounds(("Fictazine", "Shamacil"))
    alerts = [_alert(i, "Fictazine", c) for i, c in enumerate((2.0, 8.0, 32.0), 1)]
    alerts.append(_alert(9, "Shamacil", 32.0, state="dismissed"))  # dismissed: not counted
    fits = [_fit("Fictazine", 2, 9.0), _fit("Fictazine", 3, 2.6)]  # the last day counts
    check = check_against_truth(truth, compounds, alerts, fits, CFG)
    assert check.missed == [] and check.false_alarms == []
    assert check.ic50 == [("Fictazine", 2.0, 2.6, True)]
    assert check.ok


def test_summary_rows_show_truth_first_alert_and_fit(truth):
    alerts = [_alert(1, "Fictazine", 32.0, since=2, severity="critical"),
              _alert(2, "Fictazine", 8.0, since=3)]
    fits = [_fit("Fictazine", 3, 2.4, ci=(1.5, 3.9)),
            _fit("Shamacil", 3, math.inf, ci=(math.nan, math.nan), infinite=True)]
    rows = {r.compound: r for r in summarise(truth, alerts, fits, "Killitox")}
    assert list(rows)[0] == "Killitox"
    f = rows["Fictazine"]
    assert (f.toxic, f.ic50_true, f.first_alert_read, f.worst_severity) == (
        True, 2.0, 2, "critical")
    assert f.alerted_concentrations == (8.0, 32.0)
    assert rows["Shamacil"].first_alert_read is None and not rows["Shamacil"].toxic
    text = format_summary(list(rows.values()))
    assert "2.4 µM (1.5–3.9)" in text
    assert "time point 2, critical" in text
    assert "harmless" in text
    assert fit_text(fits[1]) == "none (infinite)"
    flat = [ViabilityRecord("Shamacil", 3, c, v) for c in (0.5, 2.0, 8.0, 32.0)
            for v in (1.0, 0.97, 1.02)]
    flat += [ViabilityRecord("Shamacil", 3, 32.0, 0.9)]
    (row,) = ic50_rows(fit_compounds(flat))
    assert fit_text(row) == "> 32 µM (top tested)"
    assert fit_text(_fit("Mock", 3, 4.7, ci=(math.nan, math.nan))) == (
        "4.7 µM (CI could not be estimated)")
    assert fit_text(Ic50Row("Killitox", 3, math.nan, (math.nan, math.nan), False, False,
                            n_concentrations=1)) == "n/a (1 concentration)"
