"""A time-lapse acquisition of whole plates under drug exposure, with ground truth.

Each compound follows a log-logistic dose-response curve
``v = 1 / (1 + (c / IC50) ** hill)`` whose effect switches in from its onset
day; vehicle and untreated wells stay near 1 with biological spread, positive
controls collapse. Every imaged well keeps its own spheroid (size, position,
shape) across reads while its viability changes. Images are written with a
vendor naming preset, optionally slowly and in chunks the way an imager writes
them, and :meth:`PlateSimulation.truth` tells what the renderer was asked for.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from nvir_agent.errors import DataError, read_text_file
from nvir_agent.monitor.platemap import PlateMap, read_plate_maps
from nvir_agent.plate import parse_well, row_letters
from nvir_agent.synth.render import TRAINING, Conditions, NuisanceRanges, Rendered, render_spheroid

log = logging.getLogger(__name__)

NAMINGS = ("imagexpress", "incucyte", "harmony")
IMAGED_ROLES = ("vehicle", "treated", "positive", "untreated")


@dataclass(frozen=True)
class Compound:
    """Ground truth of one (fictional) compound. ``ic50_uM`` is inf when harmless."""

    name: str
    ic50_uM: float = math.inf
    hill: float = 1.0
    onset_day: float = 1.0

    @property
    def toxic(self) -> bool:
        return math.isfinite(self.ic50_uM)

    def viability(self, concentration_uM: float | None, day: float) -> float:
        """Expected viability (1 = like vehicle) at a concentration on a day.

        The effect is absent before ``onset_day - 1``, ramps in over that last
        day and is complete from ``onset_day`` on.
        """
        if not self.toxic or not concentration_uM or concentration_uM <= 0:
            return 1.0
        ramp = min(max(day - self.onset_day + 1.0, 0.0), 1.0)
        response = 1.0 / (1.0 + (concentration_uM / self.ic50_uM) ** self.hill)
        return 1.0 - ramp * (1.0 - response)


# Obviously fictional names: a positive control and six test compounds, three
# toxic (onset day 1 and day 5, IC50 inside the demo range) and three harmless.
POSITIVE_CONTROL = Compound("Killitox", ic50_uM=0.5, hill=2.0, onset_day=1)
DEFAULT_COMPOUNDS: dict[str, Compound] = {
    c.name: c
    for c in (
        POSITIVE_CONTROL,
        Compound("Fictazine", ic50_uM=2.0, hill=1.5, onset_day=1),
        Compound("Mockomycin", ic50_uM=10.0, hill=2.0, onset_day=1),
        Compound("Pretendol", ic50_uM=5.0, hill=1.8, onset_day=5),
        Compound("Shamacil"),
        Compound("Nullitide"),
        Compound("Imaginol"),
    )
}
DEMO_CONCENTRATIONS_UM = (0.5, 2.0, 8.0, 32.0)
POSITIVE_CONCENTRATION_UM = 30.0


def read_compounds(path: str | Path) -> dict[str, Compound]:
    """Read ``compound,ic50_uM,hill,onset_day`` (ic50 empty, 'inf' or 'none' = harmless)."""
    p = Path(path)
    text = read_text_file(p, "Compound table", DataError,
                          missing_hint="Check the path of --compounds.",
                          format_hint="Save it as UTF-8 CSV.")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if "compound" not in header or "ic50_um" not in header:
        raise DataError(f"The compound table {p} lacks the compound or ic50_uM column.",
                        "The header must be compound,ic50_uM,hill,onset_day.")
    reader.fieldnames = header
    out: dict[str, Compound] = {}
    for row in reader:
        values = {k: (v or "").strip() for k, v in row.items() if k}
        name = values.get("compound", "")
        if not name:
            continue
        where = f"{p}: line {reader.line_num}"
        try:
            ic50_raw = values.get("ic50_um", "").lower()
            ic50 = math.inf if ic50_raw in ("", "inf", "none", "nan", "-") else float(ic50_raw)
            hill = float(values.get("hill") or 1.0)
            onset = float(values.get("onset_day") or 1.0)
        except ValueError as exc:
            raise DataError(f"{where}: a value is not a number ({exc}).",
                            "ic50_uM, hill and onset_day must be numbers; leave ic50_uM "
                            "empty for a harmless compound.") from exc
        if ic50 <= 0 or hill <= 0:
            raise DataError(f"{where}: ic50_uM and hill must be positive.",
                            "Give e.g. ic50_uM 5 and hill 1.5.")
        out[name] = Compound(name, ic50, hill, onset)
    if not out:
        raise DataError(f"The compound table {p} lists no compound.", "Add one line per compound.")
    return out


def demo_plate_rows(plate: str = "DEMO-P1") -> list[dict[str, Any]]:
    """A 96-well demo layout: 12 vehicle, 8 untreated, 4 positive-control and 72
    treated wells (six compounds × four concentrations × three replicates)."""
    rows: list[dict[str, Any]] = []

    def add(well: str, role: str, compound: str = "", conc: float | None = None) -> None:
        rows.append({"plate": plate, "well": well, "role": role, "compound": compound,
                     "concentration_uM": "" if conc is None else f"{conc:g}"})

    for r in range(1, 9):
        add(f"{row_letters(r)}01", "vehicle")
    tests = [n for n, c in DEFAULT_COMPOUNDS.items() if c is not POSITIVE_CONTROL]
    doses = [(name, conc) for name in tests for conc in DEMO_CONCENTRATIONS_UM for _ in range(3)]
    wells = [f"{row_letters(r)}{col:02d}" for col in range(2, 11) for r in range(1, 9)]
    for well, (name, conc) in zip(wells, doses, strict=True):
        add(well, "treated", name, conc)
    for r in range(1, 9):
        add(f"{row_letters(r)}11", "untreated")
    for r in range(1, 9):
        if r <= 4:
            add(f"{row_letters(r)}12", "vehicle")
        else:
            add(f"{row_letters(r)}12", "positive", POSITIVE_CONTROL.name, POSITIVE_CONCENTRATION_UM)
    return rows


def write_plate_map(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write plate-map rows as ``plate,well,role,compound,concentration_uM`` CSV."""
    p = Path(path)
    cols = ["plate", "well", "role", "compound", "concentration_uM"]
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    except OSError as exc:
        raise DataError(f"Cannot write the plate map {p}: {exc.strerror or exc}.",
                        "Choose a folder you may write to.") from exc
    return p


def image_name(plate: str, well: str, read: int, naming: str) -> str:
    """Relative path of one image under an acquisition folder, vendor style.

    ``read`` is the 1-based read (time point); it is also the day number.
    """
    row, col = parse_well(well)
    canonical = f"{row_letters(row)}{col:02d}"
    if naming == "imagexpress":
        return f"{plate}/TimePoint_{read}/{plate}_{canonical}_s1_w1.TIF"
    if naming == "incucyte":
        return f"{plate}/{plate}_phase_{row_letters(row)}{col}_1_{read:02d}d00h00m.tif"
    if naming == "harmony":
        return f"{plate}/Images/r{row:02d}c{col:02d}f01p01-ch1sk{read}fk1fl1.tiff"
    raise DataError(f"Unknown naming preset {naming!r} for synthetic plates.",
                    f"Use one of: {', '.join(NAMINGS)}.")


def _stable(*parts: object) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode())


@dataclass(frozen=True)
class WellTruth:
    plate: str
    well: str
    role: str
    compound: str | None
    concentration_uM: float | None
    day: int
    viability: float


class PlateSimulation:
    """Whole plates imaged once a day for ``days`` reads (days 1..days)."""

    def __init__(self, plate_maps: PlateMap | Iterable[PlateMap],
                 compounds: Mapping[str, Compound] | None = None, *, days: int = 5,
                 seed: int = 0, size: int = 1024, bits: int = 8,
                 ranges: NuisanceRanges = TRAINING, conditions: Conditions | None = None,
                 vehicle_sd: float = 0.05, replicate_sd: float = 0.05) -> None:
        self.plate_maps = [plate_maps] if isinstance(plate_maps, PlateMap) else list(plate_maps)
        if not self.plate_maps:
            raise DataError("No plate map to simulate.", "Give a plate map with at least one plate.")
        if days < 1:
            raise DataError(f"days={days}: a plate needs at least one read.", "Simulate one read or more.")
        self.compounds = dict(DEFAULT_COMPOUNDS if compounds is None else compounds)
        self.days = int(days)
        self.seed = int(seed)
        self.ranges = ranges
        self.base = replace(conditions or Conditions(), width=size, height=size, bits=bits)
        self.vehicle_sd = vehicle_sd
        self.replicate_sd = replicate_sd
        for pm in self.plate_maps:
            for a in pm.wells.values():
                if a.role in ("treated", "positive") and a.compound not in self.compounds:
                    raise DataError(
                        f"Plate {pm.plate}, well {a.well}: compound {a.compound!r} has no truth "
                        "(IC50, hill, onset).",
                        "Add it to the --compounds table (compound,ic50_uM,hill,onset_day).")

    @property
    def reads(self) -> list[int]:
        return list(range(1, self.days + 1))

    def wells(self) -> list[tuple[str, str]]:
        """(plate, well) of every imaged well, in plate then well order."""
        return [(pm.plate, w) for pm in self.plate_maps for w in sorted(pm.wells)
                if pm.wells[w].role in IMAGED_ROLES]

    def _assignment(self, plate: str, well: str):  # noqa: ANN202 - WellAssignment
        for pm in self.plate_maps:
            if pm.plate == plate and well in pm.wells:
                return pm.wells[well]
        raise DataError(f"Well {plate} {well} is not on the plate map.", "Use wells of the map.")

    def viability(self, plate: str, well: str, day: int) -> float:
        """The latent viability the renderer draws for a well on a day."""
        a = self._assignment(plate, well)
        well_rng = np.random.default_rng([self.seed, _stable(plate, well)])
        well_effect = float(well_rng.normal(0.0, self.replicate_sd))
        day_rng = np.random.default_rng([self.seed, _stable(plate, well, day)])
        day_noise = float(day_rng.normal(0.0, self.vehicle_sd * 0.5))
        if a.role in ("vehicle", "untreated"):
            base = 1.0 + float(well_rng.normal(0.0, self.vehicle_sd))
        else:
            base = self.compounds[a.compound].viability(a.concentration_uM, day)
            base *= 1.0 + well_effect
        return float(min(max(base + day_noise * base, 0.0), 1.25))

    def render(self, plate: str, well: str, day: int) -> Rendered:
        """The image of a well on a day; the well keeps its spheroid across days."""
        ident = _stable(self.seed, plate, well)
        well_rng = np.random.default_rng([self.seed, ident, 7])
        diameter = float(well_rng.uniform(*self.ranges.diameter_frac))
        off = self.ranges.offset
        offset = (float(well_rng.uniform(-off, off)), float(well_rng.uniform(-off, off)))
        jitter = np.random.default_rng([self.seed, ident, day]).normal(0.0, 0.004, 2)
        plate_rng = np.random.default_rng([self.seed, _stable(plate, day)])
        illumination = float(plate_rng.uniform(*self.ranges.illumination))
        cond = replace(
            self.base,
            identity=ident,
            diameter_frac=self.base.diameter_frac or diameter * (1.0 + 0.02 * (day - 1)),
            offset=self.base.offset or (offset[0] + float(jitter[0]), offset[1] + float(jitter[1])),
            illumination=self.base.illumination or illumination,
        )
        seed = _stable(self.seed, plate, well, day)
        return render_spheroid(self.viability(plate, well, day), seed, cond, self.ranges)

    def write_read(self, day: int, out_dir: str | Path, naming: str = "imagexpress", *,
                   chunk_delay_s: float = 0.0, chunk_bytes: int = 256 * 1024,
                   on_file: Callable[[Path], None] | None = None) -> list[Path]:
        """Write every imaged well of every plate for one read (day).

        Files get their final names and are written in place; with
        ``chunk_delay_s`` > 0 each file grows chunk by chunk with a pause in
        between, as an imager writing to a network share does.
        """
        if day not in self.reads:
            raise DataError(f"Read {day} is not simulated (reads 1–{self.days}).",
                            f"Use a day from 1 to {self.days}.")
        root = Path(out_dir)
        written = []
        for plate, well in self.wells():
            rel = image_name(plate, well, day, naming)
            target = root / rel
            data = _tiff_bytes(self.render(plate, well, day).image)
            _write_slowly(target, data, chunk_delay_s, chunk_bytes)
            written.append(target)
            if on_file is not None:
                on_file(target)
        log.info("wrote read %d: %d images under %s", day, len(written), root)
        return written

    def write_all(self, out_dir: str | Path, naming: str = "imagexpress",
                  on_file: Callable[[Path], None] | None = None) -> list[Path]:
        return [p for d in self.reads for p in self.write_read(d, out_dir, naming, on_file=on_file)]

    def truth(self) -> dict[str, Any]:
        """Per compound (toxic, IC50, hill, onset day, tested concentrations) and
        per imaged well and day the viability the images were rendered with."""
        tested: dict[str, set[float]] = {}
        wells: list[WellTruth] = []
        for plate, well in self.wells():
            a = self._assignment(plate, well)
            if a.compound and a.concentration_uM is not None:
                tested.setdefault(a.compound, set()).add(a.concentration_uM)
            for day in self.reads:
                wells.append(WellTruth(plate, well, a.role, a.compound, a.concentration_uM, day,
                                       self.viability(plate, well, day)))
        compounds = {}
        for name, c in self.compounds.items():
            concs = sorted(tested.get(name, ()))
            compounds[name] = {
                "toxic": c.toxic,
                "ic50_uM": c.ic50_uM if c.toxic else None,
                "hill": c.hill,
                "onset_day": c.onset_day,
                "concentrations_uM": concs,
                "ic50_in_range": bool(c.toxic and concs and concs[0] <= c.ic50_uM <= concs[-1]),
            }
        return {"compounds": compounds, "wells": [w.__dict__ for w in wells], "days": self.reads}


def _tiff_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, image, photometric="minisblack")
    return buf.getvalue()


def _write_slowly(target: Path, data: bytes, delay_s: float, chunk: int) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as fh:
            if delay_s <= 0:
                fh.write(data)
                return
            for start in range(0, len(data), chunk):
                fh.write(data[start:start + chunk])
                fh.flush()
                if start + chunk < len(data):
                    time.sleep(delay_s)
    except OSError as exc:
        raise DataError(f"Cannot write {target}: {exc.strerror or exc}.",
                        "Choose an output folder you may write to, with free space.") from exc


def load_plate_maps(path: str | Path) -> list[PlateMap]:
    """Plate maps from a CSV or TOML file (the monitor's parser)."""
    return read_plate_maps(path)
