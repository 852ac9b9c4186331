"""A labelled synthetic training set: spheroid images plus ``labels.csv``.

The set imitates how NViR's labels arise in a lab. Plates are imaged at two or
more sites (microscopes with their own illumination, focus and noise habits)
on several days. Each plate holds vehicle wells (viability ≈ 1 with biological
spread), positive-control wells and wells treated with fictional compounds at
several concentrations (viability from a log-logistic curve). The ATP assay
reads ``atp_raw`` = latent viability × a plate/day scale × measurement noise,
and the label ``viability`` is — exactly as in the paper — ``atp_raw`` divided
by the median ``atp_raw`` of the vehicle wells of the same plate and day.

``labels.csv`` columns: image, plate, well, day, compound, concentration_uM,
role, atp_raw, viability, site, then latent_viability (what the renderer drew)
and mask (path of the exact body mask, when masks are written). Paths are
relative to the output folder.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nvir_agent.errors import DataError
from nvir_agent.plate import row_letters
from nvir_agent.synth.plate import Compound
from nvir_agent.synth.render import TRAINING, Conditions, NuisanceRanges, render_spheroid

log = logging.getLogger(__name__)

LABEL_COLUMNS = ["image", "plate", "well", "day", "compound", "concentration_uM", "role",
                 "atp_raw", "viability", "site", "latent_viability", "mask"]
CONCENTRATIONS_UM = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
WELLS_PER_PLATE = 24  # per day: 4 vehicle, 2 positive, 18 treated


@dataclass(frozen=True)
class SiteStyle:
    """How one microscope differs from the nominal nuisance ranges."""

    name: str
    illumination_shift: float = 0.0
    focus_shift: float = 0.0
    noise_scale: float = 1.0
    vignetting_shift: float = 0.0
    gradient_scale: float = 1.0

    def ranges(self, base: NuisanceRanges) -> NuisanceRanges:
        def shift(rng: tuple[float, float], d: float, lo: float = 0.0) -> tuple[float, float]:
            return (max(lo, rng[0] + d), max(lo, rng[1] + d))

        return replace(
            base,
            illumination=shift(base.illumination, self.illumination_shift, 0.2),
            focus=shift(base.focus, self.focus_shift),
            noise=(base.noise[0] * self.noise_scale, base.noise[1] * self.noise_scale),
            vignetting=shift(base.vignetting, self.vignetting_shift),
            gradient=(base.gradient[0] * self.gradient_scale, base.gradient[1] * self.gradient_scale),
        )


SITES = (
    SiteStyle("site-A"),
    SiteStyle("site-B", illumination_shift=-0.05, focus_shift=0.15, noise_scale=1.5,
              vignetting_shift=0.08, gradient_scale=1.5),
    SiteStyle("site-C", illumination_shift=0.04, focus_shift=0.05, noise_scale=0.8,
              vignetting_shift=0.03, gradient_scale=0.7),
)


@dataclass(frozen=True)
class Sample:
    """One planned image and its label."""

    image: str
    plate: str
    well: str
    day: int
    compound: str
    concentration_uM: float | None
    role: str
    atp_raw: float
    viability: float
    site: str
    latent_viability: float
    seed: int
    conditions: Conditions
    mask: str = ""


def _normalise(rows: list[dict]) -> None:
    """viability = atp_raw / median vehicle atp_raw of the same plate and day."""
    vehicle: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        if r["role"] == "vehicle":
            vehicle[(r["plate"], r["day"])].append(r["atp_raw"])
    for r in rows:
        ref = vehicle.get((r["plate"], r["day"]))
        if not ref:
            raise DataError(f"Plate {r['plate']} day {r['day']} has no vehicle well.",
                            "Every plate and day needs vehicle wells to normalise ATP.")
        r["viability"] = r["atp_raw"] / statistics.median(ref)


def plan_dataset(n: int, seed: int = 0, *, size: int = 1024, bits: int = 8,
                 ranges: NuisanceRanges = TRAINING, sites: int = 2, days: int = 3,
                 masks: bool = False) -> list[Sample]:
    """Plan ``n`` labelled images (no rendering): plates, wells, days, labels."""
    if n < 1:
        raise DataError(f"n={n}: nothing to render.", "Ask for at least one image.")
    if bits not in (8, 16):
        raise DataError(f"bits={bits} is not supported.", "Use 8 or 16.")
    if not 1 <= sites <= len(SITES):
        raise DataError(f"sites={sites} is out of range.", f"Use 1 to {len(SITES)} sites.")
    rng = np.random.default_rng([seed, 1])
    ext = "png" if bits == 8 else "tif"
    rows: list[dict] = []
    plate_no = 0
    while len(rows) < n:
        plate_no += 1
        site = SITES[(plate_no - 1) % sites]
        plate = f"SYN{seed}-P{plate_no:03d}"
        site_gain = {"site-A": 1.0, "site-B": 0.7, "site-C": 1.3}[site.name]
        # this plate's wells: vehicle first so that any partial plate can be normalised
        compounds = []
        for k in range(3):
            toxic = rng.random() < 0.8
            compounds.append(Compound(
                f"Synthomycin-{plate_no:03d}{'abc'[k]}",
                ic50_uM=float(10 ** rng.uniform(-0.7, 2.3)) if toxic else math.inf,
                hill=float(rng.uniform(0.8, 3.0)),
                onset_day=float(rng.integers(1, days + 1)),
            ))
        layout: list[tuple[str, Compound | None, float | None]] = [("vehicle", None, None)] * 4
        layout += [("positive", Compound("Killitox", 0.5, 2.0, 1), 30.0)] * 2
        for comp in compounds:
            for conc in rng.choice(CONCENTRATIONS_UM, 6, replace=False):
                layout.append(("treated", comp, float(conc)))
        wells = [f"{row_letters(2 + i // 10)}{2 + i % 10:02d}" for i in range(WELLS_PER_PLATE)]
        well_cond = []
        for _ in wells:
            off = ranges.offset
            well_cond.append((int(rng.integers(2**31)), float(rng.uniform(*ranges.diameter_frac)),
                              (float(rng.uniform(-off, off)), float(rng.uniform(-off, off))),
                              float(rng.normal(0.0, 0.06))))
        for day in range(1, days + 1):
            scale = float(rng.lognormal(math.log(5e4), 0.35)) * site_gain
            for well, (role, comp, conc), (ident, diam, offset, bio) in zip(wells, layout, well_cond, strict=True):
                if len(rows) >= n:
                    break
                if role == "vehicle":
                    latent = 1.0 + bio + float(rng.normal(0.0, 0.03))
                else:
                    latent = comp.viability(conc, day) * (1.0 + bio * 0.5)
                    latent += float(rng.normal(0.0, 0.03)) * latent
                latent = float(min(max(latent, 0.0), 1.25))
                atp = latent * scale * float(rng.lognormal(0.0, 0.04)) + float(rng.normal(0, 30))
                name = f"{plate}_{well}_d{day}"
                cond = Conditions(width=size, height=size, bits=bits, identity=ident,
                                  diameter_frac=diam * (1.0 + 0.02 * (day - 1)), offset=offset)
                rows.append({
                    "image": f"images/{plate}/{name}.{ext}", "plate": plate, "well": well,
                    "day": day, "compound": comp.name if comp else "", "concentration_uM": conc,
                    "role": role, "atp_raw": round(max(atp, 1.0), 3), "site": site.name,
                    "latent_viability": latent, "seed": int(rng.integers(2**31)),
                    "conditions": cond,
                    "mask": f"masks/{plate}/{name}.png" if masks else "",
                })
    _normalise(rows)
    return [Sample(**r) for r in rows]


@dataclass(frozen=True)
class DatasetSummary:
    out_dir: Path
    labels: Path
    n: int
    plates: int
    sites: list[str]


def write_dataset(out_dir: str | Path, n: int, seed: int = 0, *, size: int = 1024,
                  bits: int = 8, masks: bool = False, ranges: NuisanceRanges = TRAINING,
                  sites: int = 2, days: int = 3, workers: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> DatasetSummary:
    """Render and write a labelled set; returns where ``labels.csv`` is."""
    samples = plan_dataset(n, seed, size=size, bits=bits, ranges=ranges, sites=sites,
                           days=days, masks=masks)
    site_ranges = {s.name: s.ranges(ranges) for s in SITES[:sites]}
    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"Cannot create {root}: {exc.strerror or exc}.",
                        "Choose an output folder you may write to.") from exc

    def one(s: Sample) -> None:
        r = render_spheroid(s.latent_viability, s.seed, s.conditions, site_ranges[s.site])
        _write_image(root / s.image, r.image)
        if s.mask:
            _write_image(root / s.mask, r.mask.astype(np.uint8) * 255)

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(one, samples):
            done += 1
            if progress is not None:
                progress(done, len(samples))
    labels = root / "labels.csv"
    tmp = labels.with_name("labels.csv.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(LABEL_COLUMNS)
            for s in samples:
                w.writerow([s.image, s.plate, s.well, s.day, s.compound,
                            "" if s.concentration_uM is None else f"{s.concentration_uM:g}",
                            s.role, f"{s.atp_raw:.3f}", repr(s.viability), s.site,
                            f"{s.latent_viability:.6f}", s.mask])
        os.replace(tmp, labels)
    except OSError as exc:
        raise DataError(f"Cannot write {labels}: {exc.strerror or exc}.",
                        "Choose an output folder you may write to, with free space.") from exc
    log.info("wrote %d images and %s", len(samples), labels)
    return DatasetSummary(root, labels, len(samples), len({s.plate for s in samples}),
                          sorted({s.site for s in samples}))


def _write_image(path: Path, image: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".tif", ".tiff"):
            tifffile.imwrite(path, image, photometric="minisblack")
        elif not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"OpenCV could not encode {path.name}")
    except OSError as exc:
        raise DataError(f"Cannot write {path}: {exc.strerror or exc}.",
                        "Choose an output folder you may write to, with free space.") from exc
