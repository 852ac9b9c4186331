"""Read → segment: the one way an image file (or pixels already decoded) becomes
a spheroid outline with its features and quality flags.

The engine's segment stage, `nvir-agent segment`, `nvir-agent score` (for the
spheroid crop), the training crops and the classic-feature baseline all go
through :func:`analyse`, so they read files, choose the pixel size and report
OpenCV failures the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nvir_agent.errors import AnalysisError
from nvir_agent.imaging.reading import DEFAULT_MAX_SIDE, read_image
from nvir_agent.imaging.segmentation import Segmentation, segment


@dataclass(frozen=True)
class SegmentedImage:
    """An image and its segmentation. ``meta`` is the file's metadata ({} for pixels)."""

    pixels: np.ndarray
    bit_depth: int | None
    segmentation: Segmentation
    meta: dict[str, Any] = field(default_factory=dict)


def analyse(
    source: str | os.PathLike[str] | np.ndarray, *, bit_depth: int | None = None,
    pixel_size_um: float | None = None, max_side: int = DEFAULT_MAX_SIDE, page: int = 0,
    refine_boundary: bool = True, name: str | os.PathLike[str] | None = None,
) -> SegmentedImage:
    """Read ``source`` (a file; an array is taken as decoded pixels) and find its spheroid.

    ``bit_depth`` is that of pixels given directly (a file says its own).
    ``pixel_size_um`` (µm per pixel) wins over the one a file records; either
    adds sizes in µm to the features. ``max_side`` and ``page`` are passed to
    :func:`read_image`; ``name`` is what messages call the image (default: the
    path). Raises ImageReadError for a file that cannot be read and
    AnalysisError when the pixels cannot be segmented.
    """
    if isinstance(source, np.ndarray):
        pixels, meta = source, {}
    else:
        img = read_image(Path(source), max_side=max_side, page=page)
        pixels, bit_depth, meta = img.pixels, img.bit_depth, img.meta
        name = source if name is None else name
    size = pixel_size_um or meta.get("pixel_size_um")
    try:
        seg = segment(pixels, bit_depth=bit_depth, pixel_size_um=size,
                      refine_boundary=refine_boundary)
    except cv2.error as exc:
        raise AnalysisError(f"{name if name is not None else 'image'}: OpenCV could not "
                            f"segment the image: {exc.err or exc}.") from exc
    return SegmentedImage(pixels, bit_depth, seg, meta)
