"""The review window on a fixture store (real Qt widgets, offscreen)."""

from __future__ import annotations

from gui_helpers import PLATE

from nvir_agent.gui import workers
from nvir_agent.gui.review.window import ReviewWindow
from nvir_agent.store import StoreReader


def open_window(qtbot, config, db, **kw) -> ReviewWindow:
    w = ReviewWindow(db, config, **kw)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.loaded and PLATE in w.plates and workers.jobs_in_flight() == 0,
                    timeout=15000)
    return w


def test_window_lists_active_alerts_critical_first_and_colours_wells(
        qtbot, gui_store, no_leaked_workers):
    config, db = gui_store
    w = open_window(qtbot, config, db)
    model = w.alert_list.proxy
    assert model.rowCount() == 2
    first = model.index(0, 0).data()
    assert first == "critical"
    grid = w.plate_view.grid
    assert grid.timepoint == 3
    tox = grid.scale.colour(grid.data.value("D02", 3, "rel_control"))
    vehicle = grid.scale.colour(grid.data.value("A01", 3, "rel_control"))
    assert tox.lightness() < vehicle.lightness()  # cividis: low viability is dark
    assert grid.data.value("A05", 3, "rel_control") is None  # unmapped: X, no data
    assert grid.alert_glyphs["D02"] == ("critical", "open")
    assert w.banner.isVisible() and "CRITICAL" in w.banner.text()


def test_selecting_an_alert_selects_its_wells(qtbot, gui_store, no_leaked_workers):
    config, db = gui_store
    w = open_window(qtbot, config, db)
    with StoreReader(db) as r:
        warning = next(a for a in r.alerts() if a.severity == "warning")
    assert w.alert_list.select(warning.id)
    assert w.plate_view.grid.selected == {"A02", "B02", "C02"}
    qtbot.waitUntil(lambda: w.well_view.well == "A02" and workers.jobs_in_flight() == 0,
                    timeout=15000)
    assert "Tox 1 µM" in w.well_view.header.text()
    assert w.well_view.strip.count() == 3


def test_acknowledge_and_dismiss_through_the_window_change_the_store(
        qtbot, gui_store, no_leaked_workers, monkeypatch):
    from nvir_agent.gui.review import dialogs

    config, db = gui_store
    w = open_window(qtbot, config, db)
    with StoreReader(db) as r:
        crit, warn = sorted(r.alerts(), key=lambda a: a.severity)
    monkeypatch.setattr(dialogs.AcknowledgeDialog, "exec", lambda self: 1)
    monkeypatch.setattr(dialogs.AcknowledgeDialog, "values", lambda self: ("seen", None))
    w.alert_list.select(crit.id)
    w.ack_action.trigger()
    qtbot.waitUntil(lambda: StoreReader(db).alert(crit.id).state == "acknowledged",
                    timeout=10000)
    qtbot.waitUntil(lambda: not w.banner.isVisible(), timeout=10000)
    monkeypatch.setattr(dialogs.DismissDialog, "exec", lambda self: 1)
    monkeypatch.setattr(dialogs.DismissDialog, "values", lambda self: "bubble")
    w.alert_list.select(warn.id)
    w.dismiss_action.trigger()
    qtbot.waitUntil(lambda: StoreReader(db).alert(warn.id).state == "dismissed", timeout=10000)
    with StoreReader(db) as r:
        assert r.alert_events(warn.id)[-1].comment == "bubble"
    qtbot.waitUntil(lambda: workers.jobs_in_flight() == 0, timeout=10000)


def test_opening_on_an_alert_selects_it(qtbot, gui_store, no_leaked_workers):
    config, db = gui_store
    with StoreReader(db) as r:
        warn = next(a for a in r.alerts() if a.severity == "warning")
    w = open_window(qtbot, config, db, alert_id=warn.id)
    assert w.alert_list.current().id == warn.id


def test_plate_export_writes_csv_and_heatmap_png(qtbot, gui_store, no_leaked_workers,
                                                  tmp_path):
    config, db = gui_store
    w = open_window(qtbot, config, db)
    out = tmp_path / "p1.csv"
    w.export_plate(str(out))
    qtbot.waitUntil(out.is_file, timeout=10000)
    text = out.read_text(encoding="utf-8").splitlines()
    assert text[0].startswith("plate,well,role")
    assert any(line.startswith("P1,D02,treated,Tox,10.0") for line in text)
    png = w.plate_view.export_png(str(tmp_path / "heat.png"))
    assert png and (tmp_path / "heat.png").stat().st_size > 1000
    qtbot.waitUntil(lambda: workers.jobs_in_flight() == 0, timeout=10000)


def test_review_command_writes_a_screenshot(qtbot, gui_store, tmp_path, capsys):
    from nvir_agent.cli.main import main

    config, db = gui_store
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[storage]\ndatabase = "{db}"\n', encoding="utf-8")
    out = tmp_path / "shot.png"
    assert main(["review", "--config", str(toml), "--screenshot", str(out)]) == 0
    assert out.stat().st_size > 10000
    from PySide6.QtGui import QImage

    img = QImage(str(out))
    assert img.width() >= 1000 and img.height() >= 600


def test_plate_cells_use_the_store_well_names_on_every_format():
    from nvir_agent.gui.plate_data import _guess_format
    from nvir_agent.gui.review.plate_paint import well_cells

    cells = well_cells(32, 48)
    assert cells["A01"] == (0, 0) and cells["AF48"] == (31, 47) and len(cells) == 1536
    assert _guess_format(["A01", "H12"]) == 96
    assert _guess_format(["A01", "P24"]) == 384
    assert _guess_format(["B03", "AF48"]) == 1536


def test_new_results_reload_the_plate_shown_keeping_the_well(
        qtbot, gui_store, no_leaked_workers, monkeypatch, tmp_path):
    from gui_helpers import TOX, VEHICLE, disc

    from nvir_agent.gui.review import window as window_module
    from nvir_agent.ingest.filenames import ImageKey
    from nvir_agent.store import Measurement, Result, Store

    monkeypatch.setattr(window_module, "LIVE_RELOAD_S", 0.0)
    config, db = gui_store
    w = open_window(qtbot, config, db)
    w.select_well("P1", "D02")
    before = w.plates["P1"]
    assert before.timepoints == [1, 2, 3]
    jobs = []
    for well in [*VEHICLE, *TOX]:  # a fourth read comes in
        p = tmp_path / f"P1_{well}_t4.png"
        disc(p, 20)
        jobs.append((str(p), 1, 1.0, ImageKey(
            vendor="test", plate="P1", well=well, row=ord(well[0]) - 64,
            column=int(well[1:]), field=1, channel="1", timepoint=4)))
    with Store(db) as store:
        store.add_jobs(jobs)
        store.commit_results([Result(rec, None, Measurement(
            found=True, viability=1.0 if rec.key.well in VEHICLE else 0.05, model="test",
            qc=[], features={"width": 96, "height": 96})) for rec in store.pending(100)])
    w.refresh()
    qtbot.waitUntil(lambda: w.plates["P1"] is not before and workers.jobs_in_flight() == 0,
                    timeout=15000)
    assert w.plates["P1"].timepoints == [1, 2, 3, 4]
    assert w.plate_view.timepoint == 4  # it was on the latest read: it follows
    assert w.well == "D02" and w.well_view.well == "D02"
    qtbot.waitUntil(lambda: w.well_view.strip.count() == 4, timeout=15000)


def _well_shown(qtbot, w, well: str) -> None:
    """Select the well and wait until its images and trust line are in."""
    w.select_well(PLATE, well)
    qtbot.waitUntil(lambda: w.plates[PLATE].details is not None
                    and w.well_view.well == well and w.well_view.strip.count() == 3
                    and workers.jobs_in_flight() == 0, timeout=15000)
    w.select_well(PLATE, well)  # again, now with the images read
    qtbot.waitUntil(lambda: workers.jobs_in_flight() == 0, timeout=15000)


def _captions(w) -> list[str]:
    strip = w.well_view.strip
    return [strip.item(i).text() for i in range(strip.count())]


def test_scores_show_their_interval_and_images_unlike_training_are_marked(
        qtbot, tmp_path, no_leaked_workers):
    from gui_helpers import UNLIKE_MESSAGE, build_store

    from nvir_agent.gui.review.alert_list import COLUMNS

    config, db = build_store(tmp_path, trust=True)
    w = open_window(qtbot, config, db)
    # the plate's warning stands above everything, in plain words with the fix
    assert w.caveat.isVisible() and w.caveat.toolTip() == UNLIKE_MESSAGE
    assert w.caveat.text().startswith("⚠ P1: 71% of the wells at time point 3 look unlike the "
                                      "images model test was trained on")
    assert "nvir-agent train --init test" in w.caveat.text()
    _well_shown(qtbot, w, "D02")
    captions = _captions(w)
    assert captions[0].splitlines()[1] == "0.80 (0.70–0.90)"  # time point 1: score (interval)
    assert "unlike training" not in captions[0]
    assert captions[2].splitlines()[1:] == ["0.10 (0.00–0.20)", "unlike training"]
    flagged = w.well_view.strip.item(2)
    assert flagged.background().color().name() == "#ffe0b2"
    tip = flagged.toolTip()
    assert "typicality 0.00" in tip and "may be wrong" in tip
    assert "nvir-agent train --init test" in tip
    assert "typicality 0.50" in w.well_view.strip.item(0).toolTip()
    line = w.well_view.trust_line
    assert line.isVisible()
    assert "Time point 3: viability" in line.text() and "(90 % interval)" in line.text()
    assert "typicality 0.00" in line.text() and "unlike the training images" in line.text()
    assert "nvir-agent train --init test" in line.text()
    # the plate view: the interval and the flag on hover
    grid = w.plate_view.grid
    assert grid.timepoint == 3
    tip = grid.describe("D02")
    assert "90 % interval of its viability" in tip and "unlike the model's training" in tip
    assert "unlike" not in grid.describe("H01")  # a vehicle well not flagged
    # a well not flagged at the time point shown: its value and interval, no warning
    w.plate_view.set_timepoint(1)
    qtbot.waitUntil(lambda: w.well_view.timepoint == 1, timeout=5000)
    assert "Time point 1: viability" in line.text() and "unlike" not in line.text()
    # the alert list gives the alert's interval, 'possibly' and the caveat
    col = COLUMNS.index("Viability")
    texts = {w.alert_list.model.data(w.alert_list.model.index(r, col))
             for r in range(w.alert_list.model.rowCount())}
    assert {"0.10 (0.02–0.18) ⚠", "possibly 0.60 (0.50–0.70)"} <= texts


def test_a_model_without_intervals_says_so_once(qtbot, gui_store, no_leaked_workers):
    config, db = gui_store
    w = open_window(qtbot, config, db)
    _well_shown(qtbot, w, "D02")
    line = w.well_view.trust_line.text()
    assert "not available for this model (test)" in line
    assert not w.caveat.isVisible()
    captions = _captions(w)
    assert [c.splitlines()[1] for c in captions] == ["0.80", "0.30", "0.10"]  # no per-cell noise
    assert not any("not available" in c or "n/a" in c for c in captions)
    assert "90 % interval" not in w.plate_view.grid.describe("D02")


def test_station_picker_shows_one_microscopes_plates_and_alerts(
        qtbot, gui_store, no_leaked_workers, tmp_path):
    from gui_helpers import disc

    from nvir_agent.ingest.filenames import ImageKey
    from nvir_agent.store import Measurement, Result, Store
    from nvir_agent.store.url import default_station

    config, db = gui_store  # plate P1, analysed by this computer's station
    jobs = []
    for well in ("A01", "A02"):
        p = tmp_path / f"P2_{well}.png"
        disc(p, 20)
        jobs.append((str(p), 1, 1.0, ImageKey(vendor="test", plate="P2", well=well, row=1,
                                              column=int(well[1:]), field=1, channel="1",
                                              timepoint=1)))
    with Store(db, station="scope-2") as store:  # a second microscope on the same store
        store.add_jobs(jobs)
        store.commit_results([Result(rec, None, Measurement(found=True, viability=0.5,
                                                            model="test"))
                              for rec in store.pending(10)])
        with store.transaction() as tx:
            tx.insert_alert(plate="P2", subject="well:A02", rule="viability",
                            severity="warning", message="P2 A02 at 0.50", value=0.5,
                            timepoint=1, now=4000.0, details={})
    w = open_window(qtbot, config, db)
    box = w.station_picker.box
    assert w.station_action.isVisible()
    assert [box.itemText(i) for i in range(box.count())] == \
        ["all stations", *sorted([default_station(), "scope-2"])]
    assert box.currentText() == "all stations"
    plates = w.plate_view.plate_box
    assert {plates.itemText(i) for i in range(plates.count())} == {"P1", "P2"}
    assert {a.plate for a in w.alerts} == {"P1", "P2"}

    box.setCurrentText("scope-2")
    qtbot.waitUntil(lambda: w.station == "scope-2" and w.plate == "P2" and "P2" in w.plates
                    and workers.jobs_in_flight() == 0, timeout=15000)
    assert [plates.itemText(i) for i in range(plates.count())] == ["P2"]
    assert {a.plate for a in w.alerts} == {"P2"}
    assert w.plate_view.grid.data.plate == "P2"

    box.setCurrentText(default_station())
    qtbot.waitUntil(lambda: w.plate == "P1" and workers.jobs_in_flight() == 0, timeout=15000)
    assert {a.plate for a in w.alerts} == {"P1"}
    box.setCurrentText("all stations")
    qtbot.waitUntil(lambda: w.station is None and len(w.alerts) == 3
                    and workers.jobs_in_flight() == 0, timeout=15000)


def test_one_station_needs_no_picker(qtbot, gui_store, no_leaked_workers):
    config, db = gui_store
    w = open_window(qtbot, config, db)
    assert not w.station_action.isVisible() and w.station is None


def test_unlike_training_banner_reads_well_without_model_or_time_point():
    from nvir_agent.gui.review.window import caveat_text
    from nvir_agent.store import Alert

    bare = Alert(1, "P9", "plate", "unlike_training", "warning", "open", "…", None, None,
                 0.0, 0.0, None, {})
    assert caveat_text(bare) == (
        "⚠ P9: most wells look unlike the images the model was trained on, so its scores may "
        "be wrong. Calibrate the model on this microscope: `nvir-agent train --init MODEL` on "
        "a few wells whose ATP was measured.")
