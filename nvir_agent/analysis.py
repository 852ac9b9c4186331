"""The engine's analysis pipeline: the stages run on every image, in order."""

from __future__ import annotations

import cv2
import numpy as np
import tifffile

from nvir_agent.config import Config
from nvir_agent.errors import ImageReadError
from nvir_agent.pipeline import Analysis, Stage

_TIFF_SUFFIXES = (".tif", ".tiff")


class HeaderStage:
    """Reads each image's header (size, dtype); an unreadable file fails cleanly."""

    name = "header"

    def __init__(self, config: Config) -> None:
        self.max_side = config.imaging.max_pixels_side

    def _header(self, path: str) -> dict[str, object]:
        if path.lower().endswith(_TIFF_SUFFIXES):
            try:
                with tifffile.TiffFile(path) as tif:
                    page = tif.pages[0]
                    shape, dtype = tuple(page.shape), np.dtype(page.dtype)
            except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
                raise ImageReadError(
                    f"{path} is not a readable TIFF image: {exc}.",
                    "Check that the file was copied completely.",
                ) from exc
        else:
            try:
                img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            except cv2.error as exc:
                raise ImageReadError(f"{path} cannot be decoded: {exc}.") from exc
            if img is None:
                raise ImageReadError(
                    f"{path} is not a readable image.",
                    "Check that the file is a complete TIFF, PNG, JPEG or BMP image.",
                )
            shape, dtype = img.shape, img.dtype
        if len(shape) < 2 or max(shape[:2]) > self.max_side:
            raise ImageReadError(
                f"{path} has an unusable size {shape}.",
                "Raise imaging.max_pixels_side if such large images are expected.",
            )
        return {"height": int(shape[0]), "width": int(shape[1]), "dtype": str(dtype)}

    def run(self, batch: list[Analysis]) -> None:
        for a in batch:
            try:
                a.image_meta.update(self._header(str(a.record.path)))
            except ImageReadError as exc:
                a.fail(exc)


def build_stages(config: Config) -> list[Stage]:
    """The stages the engine runs on every image, in order."""
    return [HeaderStage(config)]
