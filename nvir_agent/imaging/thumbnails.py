"""Small previews of analysed images for the review window.

A thumbnail is an 8-bit grey PNG whose longer side is at most ``size`` pixels,
kept in the user cache folder (never beside the acquisition's images) under a
name derived from the image's path, size and modification time: a changed
image gets a new thumbnail, and the cache can be deleted at any time.
The outline is not drawn into it; the UI draws the stored polygon on top.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from nvir_agent.errors import ImageError
from nvir_agent.imaging.outline import display_image
from nvir_agent.imaging.reading import read_image
from nvir_agent.paths import user_cache_dir

log = logging.getLogger(__name__)

SIZE = 256


def thumbnail_dir() -> Path:
    return user_cache_dir() / "thumbnails"


def thumbnail_path(image: str | os.PathLike[str], *, size: int = SIZE,
                   folder: Path | None = None) -> Path:
    """Where the thumbnail of ``image`` as it is now on disk lives (it may not exist)."""
    raw = os.fsencode(os.fspath(image))
    try:
        st = os.stat(image)
        stamp = f"{st.st_size}:{st.st_mtime_ns}".encode()
    except OSError:
        stamp = b"gone"
    digest = hashlib.sha1(raw + b"\0" + stamp + f"\0{size}".encode()).hexdigest()
    return (folder or thumbnail_dir()) / digest[:2] / f"{digest}.png"


def make_thumbnail(pixels: np.ndarray, bit_depth: int | None = None, *,
                   size: int = SIZE) -> np.ndarray:
    """The 8-bit preview of an image (area-averaged, longer side ``size``)."""
    gray = display_image(pixels, bit_depth)
    h, w = gray.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    return gray


def write_thumbnail(image: str | os.PathLike[str], pixels: np.ndarray,
                    bit_depth: int | None = None, *, size: int = SIZE,
                    folder: Path | None = None) -> Path:
    """Write the preview of ``image`` (whose pixels are given) into the cache; returns
    its path. Written to a temporary file first, so a reader never sees half a PNG.
    Raises OSError when it cannot be encoded or written."""
    target = thumbnail_path(image, size=size, folder=folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok, data = cv2.imencode(".png", make_thumbnail(pixels, bit_depth, size=size))
    except cv2.error as exc:
        raise OSError(f"OpenCV could not encode the thumbnail of {image}: {exc.err or exc}"
                      ) from exc
    if not ok:
        raise OSError(f"OpenCV could not encode the thumbnail of {image}")
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.tobytes())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def thumbnail_for(image: str | os.PathLike[str], *, size: int = SIZE,
                  folder: Path | None = None) -> Path:
    """The thumbnail of ``image``, made now if it is missing (reads the image: call
    it from a worker, never from a UI thread). Raises ImageError when the image
    cannot be read."""
    target = thumbnail_path(image, size=size, folder=folder)
    if target.is_file():
        return target
    data = read_image(Path(os.fspath(image)))
    try:
        return write_thumbnail(image, data.pixels, data.bit_depth, size=size, folder=folder)
    except OSError as exc:
        raise ImageError(f"Cannot write the thumbnail of {image} into {target.parent}: "
                         f"{exc.strerror or exc}.",
                         "Check that the user cache folder is writable.") from exc
