"""A small real store for the GUI tests: plate P1 with a plate map, three reads,
tiny images with a dark disc, and two alerts (one critical, one warning).

With ``trust=True`` the scores come as a model that judges trust gives them:
each with a 90 % interval (± 0.1) and a typicality (0.5), and the images of the
``UNLIKE_WELLS`` at time point 3 unlike the training images (typicality 0, the
``unlike_training`` flag), with the plate's ``unlike_training`` warning."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nvir_agent.config import Config, StorageConfig
from nvir_agent.monitor.platemap import parse_csv, plate_map_to_dict
from nvir_agent.plate import ImageKey
from nvir_agent.store import UNLIKE_TRAINING, Measurement, Result, Store, Trust

PLATE = "P1"
VEHICLE = [f"{r}01" for r in "ABCDEFGH"]
TOX = {"A02": 1.0, "B02": 1.0, "C02": 1.0, "D02": 10.0, "E02": 10.0, "F02": 10.0}
# viability per read: vehicle ~1, Tox 1 µM mild, Tox 10 µM lost
LEVEL = {1.0: (0.9, 0.8, 0.6), 10.0: (0.8, 0.3, 0.1)}
# with trust=True, unlike the training images at time point 3: 10 of the 14 wells
UNLIKE_WELLS = ("A01", "B01", "C01", "D01", *TOX)
UNLIKE_MESSAGE = ("P1: 71% of the wells at time point 3 look unlike the images model test was "
                  "trained on: this microscope's images differ from them, so its scores may be "
                  "wrong. Calibrate the model with `nvir-agent train --init test` on a few "
                  "ATP-measured wells of this microscope.")


def map_csv() -> str:
    lines = ["plate,well,role,compound,concentration_uM"]
    lines += [f"{PLATE},{w},vehicle,," for w in VEHICLE]
    lines += [f"{PLATE},{w},treated,Tox,{c:g}" for w, c in TOX.items()]
    lines += [f"{PLATE},H12,ignore,,"]
    return "\n".join(lines) + "\n"


def disc(path: Path, radius: int) -> None:
    img = np.full((96, 96), 200, np.uint8)
    cv2.circle(img, (48, 48), radius, 40, -1)
    cv2.imwrite(str(path), img)


def _trust(well: str, tp: int, via: float) -> tuple[list[str], Trust]:
    if well in UNLIKE_WELLS and tp == 3:
        return [UNLIKE_TRAINING], Trust(via - 0.1, via + 0.1, 0.0, 5.0)
    return [], Trust(via - 0.1, via + 0.1, 0.5, 1.0)


def build_store(root: Path, trust: bool = False) -> tuple[Config, Path]:
    images = root / "images"
    images.mkdir(parents=True)
    db = root / "gui.sqlite3"
    config = Config(storage=StorageConfig(database=str(db)))
    jobs = []
    for tp in (1, 2, 3):
        for well in [*VEHICLE, *TOX]:
            p = images / f"{PLATE}_{well}_t{tp}.png"
            disc(p, 22 if well in VEHICLE else 22 - 4 * tp)
            key = ImageKey(vendor="test", plate=PLATE, well=well, row=ord(well[0]) - 64,
                           column=int(well[1:]), field=1, channel="1", timepoint=tp)
            jobs.append((str(p), p.stat().st_size, p.stat().st_mtime, key))
    with Store(db) as store:
        store.add_jobs(jobs)
        results = []
        for rec in store.pending(1000):
            well, tp = rec.key.well, rec.key.timepoint
            via = 1.0 if well in VEHICLE else LEVEL[TOX[well]][tp - 1]
            qc, judged = _trust(well, tp, via) if trust else ([], Trust())
            results.append(Result(rec, None, Measurement(
                found=True, viability=via, model="test", qc=qc, trust=judged,
                features={"equivalent_diameter_px": 40.0 * via, "circularity": 0.9,
                          "focus": 50.0, "width": 96, "height": 96})))
        store.commit_results(results)
        pm = parse_csv(map_csv())[0]
        with store.transaction() as tx:
            tx.save_plate_map(PLATE, plate_map_to_dict(pm))
            details = {"compound": "Tox", "concentration_uM": 10.0, "group": "Tox 10 µM",
                       "wells": ["D02", "E02", "F02"], "alerting_wells": ["D02", "E02", "F02"],
                       "since": 2}
            if trust:
                details.update(interval=[0.02, 0.18], certainty="sure", replicates=3,
                               caveat="the images of this read are unlike the images model "
                                      "test was trained on; the score may be wrong")
            a = tx.insert_alert(plate=PLATE, subject="group:Tox 10 µM", rule="viability",
                                severity="critical", message="Tox 10 µM at 0.10 of vehicle",
                                value=0.1, timepoint=3, now=1000.0, details=details)
            tx.add_alert_event(a, "opened", 1000.0)
            d1 = {**details, "concentration_uM": 1.0, "group": "Tox 1 µM",
                  "wells": ["A02", "B02", "C02"], "alerting_wells": ["A02", "B02", "C02"]}
            if trust:
                d1.update(interval=[0.5, 0.7], certainty="possible")
                del d1["caveat"]
            b = tx.insert_alert(plate=PLATE, subject="group:Tox 1 µM", rule="viability",
                                severity="warning", message="Tox 1 µM at 0.60 of vehicle",
                                value=0.6, timepoint=3, now=2000.0, details=d1)
            tx.add_alert_event(b, "opened", 2000.0)
            if trust:
                c = tx.insert_alert(plate=PLATE, subject="plate", rule="unlike_training",
                                    severity="warning", message=UNLIKE_MESSAGE, value=10 / 14,
                                    timepoint=3, now=3000.0,
                                    details={"since": 3, "model": "test"})
                tx.add_alert_event(c, "opened", 3000.0)
    return config, db
