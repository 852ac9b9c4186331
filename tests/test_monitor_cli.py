"""Command line end to end: platemap check, alerts, ack, dismiss, resolve."""

from __future__ import annotations

import getpass
import json

import pytest

from nvir_agent.cli.main import main
from nvir_agent.config import Config
from nvir_agent.monitor.listener import Monitor
from nvir_agent.monitor.notify import Notifier
from nvir_agent.pipeline.contract import Analysis
from nvir_agent.plate import ImageKey
from nvir_agent.store import Store

MAP_CSV = ("plate,well,role,compound,concentration_uM,cmax_uM\n"
           "P1,A01:A04,vehicle,DMSO,,\n"
           "P1,B01:B03,treated,Toxazine,10,1.5\n"
           "P1,C01:C03,treated,Placebin,10,\n"
           "P1,D01,treated,Solo,3,\n")


class Quiet:
    name = "quiet"

    def send(self, message) -> None:
        pass


@pytest.fixture
def agent(tmp_path):
    """A config file, a plate map and a database holding two alerts."""
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "p1.csv").write_text(MAP_CSV, encoding="utf-8")
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text('[storage]\ndatabase = "db.sqlite3"\n[plates]\nmaps = "maps"\n',
                        encoding="utf-8")
    cfg = Config(source=cfg_path)
    cfg.plates.maps = "maps"
    values = {"B": [1.0, 0.5, 0.3, 0.3], "D": [1.0, 0.6, 0.6, 0.6]}
    with Store(tmp_path / "db.sqlite3") as store:
        monitor = Monitor(cfg, store, Notifier([Quiet()], min_interval_s=0))
        for tp in range(1, 5):
            wells = ["A01", "A02", "A03", "A04", "B01", "B02", "B03", "C01", "C02", "C03", "D01"]
            ids = store.add_jobs([(f"/acq/t{tp}/P1_{w}.tif", 1, float(tp),
                                   ImageKey(plate="P1", well=w, timepoint=tp)) for w in wells])
            batch = []
            for r in store.records(ids):
                a = Analysis(record=r)
                a.found = True
                a.viability = values.get(r.key.well[0], [1.0] * 4)[tp - 1]
                batch.append(a)
            monitor.on_results(store.commit_results([a.result() for a in batch]))
        monitor.close()
    return cfg_path


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def alert_list(capsys, cfg, *extra):
    code, out, _ = cli(capsys, "--config", str(cfg), "alerts", "--json", *extra)
    assert code == 0
    return json.loads(out)


def test_platemap_check_prints_the_layout(tmp_path, capsys):
    f = tmp_path / "map.csv"
    f.write_text(MAP_CSV, encoding="utf-8")
    code, out, _ = cli(capsys, "platemap", "check", str(f))
    assert code == 0
    assert "Plate P1 (96 wells, 11 mapped)" in out
    assert "To  Toxazine (treated): 1=10 µM; Cmax 1.5 µM" in out
    assert "OK (1 plate)" in out


def test_platemap_check_reports_errors_without_traceback(tmp_path, capsys):
    f = tmp_path / "map.csv"
    f.write_text("plate,well,role\nP1,A01,vehicle\nP1,A01,empty\n", encoding="utf-8")
    code, out, err = cli(capsys, "platemap", "check", str(f))
    assert code == 2
    assert "line 3: well A01 of plate 'P1' is listed twice" in err
    assert "→" in err and "Traceback" not in err


def test_platemap_check_uses_the_given_plate_format(tmp_path, capsys):
    f = tmp_path / "map.csv"
    f.write_text("plate,well,role\nP1,P24,vehicle\n", encoding="utf-8")
    assert cli(capsys, "platemap", "check", str(f))[0] == 2
    code, out, _ = cli(capsys, "platemap", "check", "--format", "384", str(f))
    assert code == 0 and "P  " in out


def test_alerts_lists_the_group_and_single_well_alerts(agent, capsys):
    listed = alert_list(capsys, agent)
    subjects = {(a["subject"], a["rule"], a["severity"]) for a in listed}
    assert subjects == {("group:Toxazine 10 µM", "viability", "critical"),
                        ("well:D01", "viability", "warning")}
    code, out, _ = cli(capsys, "--config", str(agent), "alerts")
    assert code == 0
    assert "CRITICAL" in out and "Toxazine 10 µM" in out and "2 active alerts" in out


def test_ack_records_user_and_comment_and_alerts_shows_them(agent, capsys):
    group = next(a for a in alert_list(capsys, agent) if a["subject"].startswith("group:"))
    code, out, _ = cli(capsys, "--config", str(agent), "ack", str(group["id"]),
                       "--comment", "re-dosing checked")
    assert code == 0 and "acknowledged" in out
    after = next(a for a in alert_list(capsys, agent) if a["id"] == group["id"])
    assert after["state"] == "acknowledged"
    assert after["events"][-1] == {**after["events"][-1], "action": "acknowledged",
                                   "user": getpass.getuser(), "comment": "re-dosing checked"}
    out = cli(capsys, "--config", str(agent), "alerts")[1]
    assert f"acknowledged by {getpass.getuser()}" in out and "re-dosing checked" in out


def test_dismissed_and_resolved_alerts_leave_the_list_but_stay_in_all(agent, capsys):
    ids = {a["subject"]: a["id"] for a in alert_list(capsys, agent)}
    assert cli(capsys, "--config", str(agent), "dismiss", str(ids["well:D01"]),
               "--comment", "bubble")[0] == 0
    assert cli(capsys, "--config", str(agent), "resolve", str(ids["group:Toxazine 10 µM"]))[0] == 0
    assert alert_list(capsys, agent) == []
    states = {a["subject"]: a["state"] for a in alert_list(capsys, agent, "--all")}
    assert states == {"well:D01": "dismissed", "group:Toxazine 10 µM": "resolved"}
    assert "No open alerts." in cli(capsys, "--config", str(agent), "alerts")[1]


def test_unknown_or_closed_alert_id_is_a_clear_error(agent, capsys):
    code, _, err = cli(capsys, "--config", str(agent), "ack", "999")
    assert code == 2 and "no alert with ID 999" in err and "alerts --all" in err
    first = alert_list(capsys, agent)[0]["id"]
    cli(capsys, "--config", str(agent), "dismiss", str(first))
    code, _, err = cli(capsys, "--config", str(agent), "dismiss", str(first))
    assert code == 2 and "already dismissed" in err


def test_ack_works_while_the_agent_holds_the_database_open(agent, capsys):
    with Store(agent.parent / "db.sqlite3"):
        first = alert_list(capsys, agent)[0]["id"]
        assert cli(capsys, "--config", str(agent), "ack", str(first))[0] == 0


def test_alerts_without_a_database_says_so(tmp_path, capsys):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[storage]\ndatabase = "none.sqlite3"\n', encoding="utf-8")
    code, out, _ = cli(capsys, "--config", str(cfg), "alerts")
    assert code == 0 and "no database" in out
    code, _, err = cli(capsys, "--config", str(cfg), "ack", "1")
    assert code == 1 and "no database" in err
