"""Training data: train/validation splits, preprocessed crops cached once, and
augmented batches.

Splits
- ``chronological`` (the paper's): within each site, batches (the ``batch``
  column, else the plate) are ordered by ``date`` when given, else by name in
  natural order; the latest ``val_fraction`` of them (at least one) are held
  out. Sites with a single batch stay in training.
- ``random``: a seeded random ``val_fraction`` of the images.
- ``site:NAME``: every image of site NAME is held out (the paper's transfer
  from one microscope to another).

Crops are the model's preprocessing (``PreprocessSpec``) as 8-bit squares,
computed once per image and kept in memory and in a disk cache keyed by the
file's path, size, modification time and the spec, so epochs and restarts do
not decode images again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nvir_agent.errors import AgentError, DataError, listing
from nvir_agent.imaging import boundary, segmentation
from nvir_agent.imaging.analyse import analyse
from nvir_agent.imaging.reading import read_image
from nvir_agent.model import preprocess as preprocess_module
from nvir_agent.model.preprocess import PreprocessSpec, preprocess
from nvir_agent.training.augment import PAPER, AugmentSettings, augment
from nvir_agent.training.labels import LabelSet

log = logging.getLogger(__name__)

SPLITS = ("chronological", "random", "site:NAME")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Indices into a LabelSet for training and validation, and how they were chosen."""

    train: list[int]
    val: list[int]
    details: dict[str, Any] = field(default_factory=dict)


def split_labels(labels: LabelSet, split: str, *, val_fraction: float = 0.2,
                 seed: int = 42) -> Split:
    """Divide ``labels`` into training and validation images (see module doc)."""
    n = len(labels)
    if not 0 < val_fraction < 1:
        raise DataError(f"validation fraction {val_fraction} is not between 0 and 1",
                        "use e.g. --val-fraction 0.2")
    if split == "random":
        if n < 2:
            raise DataError(f"a random split needs at least 2 images, the labels have {n}")
        order = np.random.default_rng(seed).permutation(n)
        n_val = min(max(1, round(val_fraction * n)), n - 1)
        val = sorted(int(i) for i in order[:n_val])
        train = sorted(int(i) for i in order[n_val:])
        return Split(train, val, {"split": "random", "val_fraction": val_fraction, "seed": seed})
    if split.startswith("site:"):
        return _site_split(labels, split[5:])
    if split == "chronological":
        return _chronological_split(labels, val_fraction)
    raise DataError(f"unknown split {split!r}",
                    "use chronological, random or site:NAME (a site to hold out)")


def _site_split(labels: LabelSet, site: str) -> Split:
    sites = sorted({it.site for it in labels.items})
    if site not in sites:
        raise DataError(f"site {site!r} is not in the labels (sites: {', '.join(sites)})",
                        "give a site named in the labels' 'site' column")
    if len(sites) < 2:
        raise DataError(f"holding out site {site!r} leaves nothing to train on",
                        "the labels need images from a second site, or use --split random")
    val = [i for i, it in enumerate(labels.items) if it.site == site]
    train = [i for i, it in enumerate(labels.items) if it.site != site]
    return Split(train, val, {"split": f"site:{site}", "val_sites": [site],
                              "train_sites": [s for s in sites if s != site]})


def _natural_key(text: str) -> list[Any]:
    return [(0, int(part)) if part.isdigit() else (1, part.lower())
            for part in re.split(r"(\d+)", text) if part]


def _chronological_split(labels: LabelSet, val_fraction: float) -> Split:
    batches: dict[str, dict[str, str]] = defaultdict(dict)
    for it in labels.items:
        batch = it.batch or it.plate
        if not batch:
            raise DataError(
                f"{labels.source}: a chronological split needs a 'batch' or 'plate' column",
                "add the plate (or batch) of each image, or use --split random",
            )
        batches[it.site].setdefault(batch, it.date)
    held: dict[str, list[str]] = {}
    for site, found in batches.items():
        ordered = sorted(found, key=lambda b: (found[b], _natural_key(b)))
        if len(ordered) < 2:
            log.info("site %s has one batch only: all of it is used for training", site)
            continue
        n_val = min(max(1, math.ceil(val_fraction * len(ordered) - 1e-9)), len(ordered) - 1)
        held[site] = ordered[-n_val:]
    if not held:
        raise DataError(
            "a chronological split needs at least two batches (plates) at one site; "
            f"found {', '.join(f'{s}: {len(b)}' for s, b in sorted(batches.items()))}",
            "use --split random, or label images from more plates",
        )
    val = [i for i, it in enumerate(labels.items) if (it.batch or it.plate) in held.get(it.site, ())]
    held_out = set(val)
    train = [i for i in range(len(labels)) if i not in held_out]
    return Split(train, val, {"split": "chronological", "val_fraction": val_fraction,
                              "val_batches": held})


# --- crops -----------------------------------------------------------------


@dataclass
class Crops:
    """8-bit preprocessed squares (N, size, size) for the usable images of a LabelSet."""

    images: np.ndarray
    indices: list[int]
    skipped: dict[str, str]


def crop_uint8(image: np.ndarray, spec: PreprocessSpec, *, bit_depth: int | None,
               pixel_size_um: float | None = None) -> np.ndarray:
    """The model's preprocessing of one decoded image as an 8-bit square (before
    normalisation); segments the spheroid first when the spec crops around it."""
    mask = None
    if spec.crop == "spheroid":
        seg = analyse(image, bit_depth=bit_depth, pixel_size_um=pixel_size_um).segmentation
        if not seg.found:
            raise DataError("no spheroid found", "the spheroid crop needs a segmented spheroid")
        mask = seg.mask
    x = preprocess(image, spec, bit_depth=bit_depth, mask=mask)[0]
    return np.clip(np.rint((x * spec.std + spec.mean) * 255.0), 0, 255).astype(np.uint8)


def normalise(crops: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """8-bit crops (N, S, S) → the network's float32 input (N, 1, S, S)."""
    x = crops.astype(np.float32)[:, None]
    x *= np.float32(1.0 / (255.0 * spec.std))
    x -= np.float32(spec.mean / spec.std)
    return x


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """Hash of the code and weights that make a crop (every module of the imaging
    package — reading, segmentation, its border classifier and later steps, read →
    segment — and preprocessing), so that cached crops are remade when they change;
    a module added to the imaging package is covered without being named here."""
    h = hashlib.sha1()
    imaging_dir = Path(inspect.getfile(segmentation)).parent
    files = [*sorted(imaging_dir.glob("*.py")), inspect.getfile(preprocess_module)]
    for file in [*files, boundary.WEIGHTS]:
        try:
            h.update(Path(file).read_bytes())
        except OSError:
            h.update(str(file).encode())
    return h.hexdigest()


def _cache_key(path: Path, spec: PreprocessSpec) -> str:
    stat = path.stat()
    blob = json.dumps([CACHE_VERSION, _code_version(), str(path.resolve()), stat.st_size,
                       stat.st_mtime_ns, spec.to_dict()], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def _load_one(path: Path, spec: PreprocessSpec, cache_dir: Path | None) -> np.ndarray:
    cached = None
    if cache_dir is not None:
        try:
            key = _cache_key(path, spec)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
        cached = cache_dir / key[:2] / f"{key}.npy"
        if cached.is_file():
            try:
                arr = np.load(cached, allow_pickle=False)
                if arr.shape == (spec.size, spec.size) and arr.dtype == np.uint8:
                    return arr
            except (OSError, ValueError):
                log.debug("ignoring unreadable cache file %s", cached)
    data = read_image(path)
    try:
        arr = crop_uint8(data.pixels, spec, bit_depth=data.bit_depth,
                         pixel_size_um=data.meta.get("pixel_size_um"))
    except ValueError as exc:
        raise DataError(f"cannot preprocess {path}: {exc}") from exc
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npy")
            np.save(tmp, arr)
            tmp.replace(cached)
        except OSError as exc:
            log.debug("cannot write cache file %s: %s", cached, exc)
    return arr


def prepare_crops(
    labels: LabelSet,
    spec: PreprocessSpec,
    *,
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Crops:
    """Read and preprocess every image of ``labels`` once.

    Images that cannot be read or (for the spheroid crop) have no spheroid are
    left out with a warning; they are listed in ``Crops.skipped``. Raises
    DataError when no image is usable.
    """
    n = len(labels)
    results: list[np.ndarray | None] = [None] * n
    skipped: dict[str, str] = {}

    def work(i: int) -> tuple[int, np.ndarray | None, str | None]:
        item = labels.items[i]
        try:
            return i, _load_one(item.path, spec, cache_dir), None
        except AgentError as exc:
            return i, None, exc.message

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, arr, error in pool.map(work, range(n)):
            if error is not None:
                skipped[labels.items[i].name] = error
            results[i] = arr
            done += 1
            if progress is not None:
                progress(done, n)
    shown = listing([f"{k}: {v}" for k, v in skipped.items()], 5, "; ")
    if skipped:
        log.warning("left out %d of %d images: %s", len(skipped), n, shown)
    indices = [i for i in range(n) if results[i] is not None]
    if not indices:
        raise DataError(f"none of the {n} images could be used ({shown})",
                        "check that the images are readable bright-field spheroid images")
    images = np.stack([results[i] for i in indices])
    return Crops(images, indices, skipped)


# --- batches ---------------------------------------------------------------


def epoch_batches(
    crops: np.ndarray,
    targets: np.ndarray,
    spec: PreprocessSpec,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    augmented: bool = True,
    shuffle: bool = True,
    pool: ThreadPoolExecutor | None = None,
    settings: AugmentSettings = PAPER,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of (N, 1, S, S) float32 inputs and (N,) targets for one epoch.

    The order and every augmentation depend only on (seed, epoch, image), so a
    resumed run sees exactly the batches an uninterrupted one would.
    """
    n = len(crops)
    order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
             else np.arange(n))

    def one(i: int) -> np.ndarray:
        if not augmented:
            return crops[i]
        return augment(crops[i], np.random.default_rng([seed, epoch, int(i)]), settings)

    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if augmented and len(idx) < 2 and n >= 2 and start > 0:
            break  # BatchNorm cannot train on a batch of one
        imgs = list(pool.map(one, idx)) if pool is not None else [one(i) for i in idx]
        yield normalise(np.stack(imgs), spec), targets[idx].astype(np.float32)


def split_arrays(crops: Crops, labels: LabelSet, indices: Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The crops and viabilities of the given label indices that have a crop."""
    where = {li: k for k, li in enumerate(crops.indices)}
    kept = [i for i in indices if i in where]
    imgs = crops.images[[where[i] for i in kept]] if kept else crops.images[:0]
    y = np.array([labels.items[i].viability for i in kept], dtype=np.float32)
    return imgs, y, kept
