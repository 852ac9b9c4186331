"""Reading the images a plate imager writes: TIFF, PNG, JPEG and BMP.

``read_image`` returns a 2-D grayscale array (uint8 or uint16), the effective
bit depth of the data and a little metadata. The format is recognised from the
file's first bytes, not its extension. The image header is checked before any
pixels are decoded, so a corrupt or hostile file (zero bytes, truncated, a
header claiming 100,000 × 100,000 pixels) is rejected with an
``ImageReadError`` naming the file and the reason, never by exhausting memory.

Decoding is done by tifffile (TIFF, with imagecodecs for LZW/deflate/zstd…)
and by OpenCV (PNG, JPEG, BMP). For PNG/JPEG/BMP the dimensions are taken from
the header bytes by the small parsers below: OpenCV has no header-only call,
and these three headers are fixed by their specifications (PNG IHDR, JPEG SOFn,
BMP info header), so a few lines here avoid depending on a second imaging
library just for that. Colour becomes luma with OpenCV's own conversion
(0.299 R + 0.587 G + 0.114 B), as the NViR reference code read its images.
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from nvir_agent.errors import ImageReadError

log = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 20000
BIT_DEPTHS = (8, 10, 12, 14, 16)
# A pixel size outside this range (µm) comes from a display resolution such as
# 72 or 96 dpi written by a generic TIFF writer, not from a microscope.
_PLAUSIBLE_PIXEL_UM = (0.01, 50.0)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_BMP_MAGIC = b"BM"
_FORMAT_NAMES = "TIFF, PNG, JPEG or BMP"


@dataclass
class ImageData:
    """A decoded image: 2-D uint8/uint16 pixels, effective bit depth, metadata."""

    pixels: np.ndarray
    bit_depth: int
    meta: dict[str, Any] = field(default_factory=dict)


def read_image(
    path: str | Path, *, max_side: int = DEFAULT_MAX_SIDE, page: int = 0
) -> ImageData:
    """Read one image file as 2-D grayscale.

    ``max_side`` bounds width and height (checked from the header before
    decoding); ``page`` picks the page of a multi-page TIFF (ignored otherwise).
    Raises ImageReadError with the file name and the reason.
    """
    path = Path(path)
    name = path.name
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            size = fh.seek(0, 2)
    except IsADirectoryError as exc:
        raise ImageReadError(f"{path} is a folder, not an image file.") from exc
    except OSError as exc:
        raise ImageReadError(
            f"Cannot open image {path}: {exc.strerror or exc}.",
            "Check that the file exists and that the agent may read it.",
        ) from exc
    if size == 0:
        raise ImageReadError(
            f"Image {name} is empty (0 bytes).",
            "The imager may still be writing it, or the copy failed; re-export the image.",
        )
    if head.startswith(_TIFF_MAGIC):
        data = _read_tiff(path, max_side=max_side, page=page, size=size)
    elif head.startswith((_PNG_MAGIC, _JPEG_MAGIC, _BMP_MAGIC)):
        data = _read_with_opencv(path, head, max_side=max_side)
    else:
        ext = path.suffix or "(none)"
        raise ImageReadError(
            f"{name} is not a {_FORMAT_NAMES} image (extension {ext}, but the content starts "
            f"with bytes {head[:8].hex(' ')}).",
            "The file may be corrupt or of another kind; re-export it from the imager.",
        )
    data.meta.setdefault("path", str(path))
    data.meta["file_size"] = size
    return data


def effective_bit_depth(pixels: np.ndarray) -> int:
    """8 for uint8 data; for 16-bit data the smallest of 8/10/12/14/16 bits holding its maximum."""
    if pixels.dtype == np.uint8:
        return 8
    top = int(pixels.max()) if pixels.size else 0
    for bits in BIT_DEPTHS:
        if top < (1 << bits):
            return bits
    return 16


# ---------------------------------------------------------------- TIFF


def _read_tiff(path: Path, *, max_side: int, page: int, size: int) -> ImageData:
    name = path.name
    try:
        with tifffile.TiffFile(path) as tif:
            pages = tif.pages
            n_pages = len(pages)
            if not 0 <= page < n_pages:
                raise ImageReadError(
                    f"{name} has {n_pages} page(s); page {page} does not exist.",
                    "Set imaging.page in agent.toml to a page that exists (0 is the first).",
                )
            tp = pages[page]
            height, width = int(tp.imagelength), int(tp.imagewidth)
            _check_dims(name, width, height, max_side)
            spp = int(tp.samplesperpixel)
            if tp.dtype is None or np.dtype(tp.dtype).kind not in "uib":
                raise ImageReadError(
                    f"{name} holds {tp.dtype or 'unknown'} samples; only 8- and 16-bit integer "
                    "images can be analysed.",
                    "Export the image as an 8- or 16-bit TIFF.",
                )
            if np.dtype(tp.dtype).itemsize > 2:
                raise ImageReadError(
                    f"{name} holds {np.dtype(tp.dtype).itemsize * 8}-bit samples; only 8- and "
                    "16-bit images can be analysed.",
                    "Export the image as an 8- or 16-bit TIFF.",
                )
            _check_tiff_extent(name, tp, size)
            arr = tp.asarray()
            if spp > 1 and int(tp.planarconfig) == 2 and arr.ndim >= 3:
                arr = np.moveaxis(arr, -3, -1)  # planar (separate) samples → contiguous
            meta = {
                "format": "tiff",
                "n_pages": n_pages,
                "page": page,
                "compression": _enum_name(tp.compression),
                "samples_per_pixel": spp,
                "source_dtype": str(np.dtype(tp.dtype)),
                "pixel_size_um": _round_um(_tiff_pixel_size_um(tif, tp)),
            }
            photometric = _enum_name(tp.photometric)
            colormap = tp.colormap
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(
            f"Not enough memory to decode {name}.", "Close other programs or use smaller images."
        ) from exc
    except OSError as exc:
        raise ImageReadError(
            f"Cannot read TIFF {name}: {exc.strerror or exc}.",
            "Check that the file exists and that the agent may read it.",
        ) from exc
    except Exception as exc:  # tifffile/imagecodecs raise many kinds on corrupt data
        raise ImageReadError(
            f"{name} is a damaged or unsupported TIFF: {exc}.",
            "Re-export the image from the imager; a truncated copy often causes this.",
        ) from exc
    pixels = _tiff_to_gray(name, arr, spp, photometric, colormap, (height, width))
    meta.update(_shape_meta(pixels))
    return ImageData(pixels, effective_bit_depth(pixels), meta)


def _check_tiff_extent(name: str, tp: Any, size: int) -> None:
    """Reject a TIFF whose pixel strips or tiles point past the end of the file."""
    offsets = tp.dataoffsets or ()
    counts = tp.databytecounts or ()
    if not offsets or not counts:
        raise ImageReadError(
            f"{name} is a damaged TIFF: its page has no pixel data.",
            "Re-export the image from the imager.",
        )
    end = max(int(o) + int(c) for o, c in zip(offsets, counts, strict=False))
    if end > size:
        raise ImageReadError(
            f"{name} is truncated: its pixel data should end at byte {end:,} but the file has "
            f"{size:,} bytes.",
            "The imager may still be writing it, or the copy was interrupted; copy it again.",
        )


def _tiff_to_gray(
    name: str, arr: np.ndarray, spp: int, photometric: str, colormap: np.ndarray | None,
    shape: tuple[int, int],
) -> np.ndarray:
    squeezed = np.squeeze(arr)
    if squeezed.ndim < 2 and spp == 1:  # one pixel high or wide: keep both axes
        squeezed = arr.reshape(shape)
    arr = squeezed
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "i":
        arr = np.clip(arr, 0, None).astype(np.uint8 if arr.dtype.itemsize == 1 else np.uint16)
    if photometric == "PALETTE" and colormap is not None and arr.ndim == 2:
        cmap = np.asarray(colormap).T  # (n, 3); TIFF palettes hold 16-bit entries
        cmap8 = (cmap >> 8 if int(cmap.max()) > 255 else cmap).astype(np.uint8)
        rgb = cmap8[np.clip(arr, 0, len(cmap8) - 1)]
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if arr.ndim == 2:
        if photometric == "MINISWHITE":
            arr = np.iinfo(arr.dtype).max - arr
        return np.ascontiguousarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and spp >= 3:
        code = cv2.COLOR_RGB2GRAY if arr.shape[-1] == 3 else cv2.COLOR_RGBA2GRAY
        return cv2.cvtColor(np.ascontiguousarray(arr), code)
    if arr.ndim == 3 and arr.shape[-1] == 2 and spp == 2:  # gray + alpha
        return np.ascontiguousarray(arr[..., 0])
    raise ImageReadError(
        f"{name} has an unsupported layout {arr.shape} (expected one 2-D plane, RGB or RGBA).",
        "Export a single grayscale or RGB plane per page.",
    )


def _tiff_pixel_size_um(tif: tifffile.TiffFile, tp: Any) -> float | None:
    """Pixel size from OME-XML, ImageJ metadata or the resolution tags; None when unknown."""
    ome = tif.ome_metadata if tif.is_ome else None
    if ome:
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
        if m:
            value = float(m.group(1)) * _unit_to_um(unit.group(1) if unit else "µm")
            if _plausible(value):
                return value
    tags = tp.tags
    xres = tags.get("XResolution")
    if xres is None:
        return None
    num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
    if not num or not den:
        return None
    px_per_unit = num / den
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    ij = tif.imagej_metadata or {}
    if ij.get("unit"):
        per_unit = _unit_to_um(str(ij["unit"]))
    elif unit == 2:
        per_unit = 25400.0
    elif unit == 3:
        per_unit = 10000.0
    else:
        return None
    if per_unit <= 0:
        return None
    value = per_unit / px_per_unit
    return value if _plausible(value) else None


def _round_um(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def _unit_to_um(unit: str) -> float:
    unit = unit.strip().lower().replace("\\u00b5", "µ")
    return {
        "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "μm": 1.0,
        "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "inch": 25400.0, "in": 25400.0,
    }.get(unit, 0.0)


def _plausible(pixel_um: float) -> bool:
    return _PLAUSIBLE_PIXEL_UM[0] <= pixel_um <= _PLAUSIBLE_PIXEL_UM[1]


def _enum_name(value: Any) -> str:
    return getattr(value, "name", str(value))


# ---------------------------------------------------------------- PNG / JPEG / BMP


def _read_with_opencv(path: Path, head: bytes, *, max_side: int) -> ImageData:
    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(
            f"Cannot read image {path}: {exc.strerror or exc}.",
            "Check that the file exists and that the agent may read it.",
        ) from exc
    if head.startswith(_PNG_MAGIC):
        fmt, (width, height, channels, bits) = "png", _png_header(name, raw)
    elif head.startswith(_JPEG_MAGIC):
        fmt, (width, height, channels, bits) = "jpeg", _jpeg_header(name, raw)
    else:
        fmt, (width, height, channels, bits) = "bmp", _bmp_header(name, raw)
    _check_dims(name, width, height, max_side)
    _check_complete(name, fmt, raw, width, height)
    # 8-bit files are decoded straight to gray exactly as the NViR reference code
    # read them (imread IMREAD_GRAYSCALE); 16-bit PNGs keep their 16 bits.
    # Files with an alpha channel are decoded as they are and the alpha dropped:
    # OpenCV's grayscale decoding would blend colour with alpha.
    flag = cv2.IMREAD_UNCHANGED if bits > 8 or channels in (2, 4) else cv2.IMREAD_GRAYSCALE
    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), flag)
    except cv2.error as exc:
        raise ImageReadError(
            f"OpenCV cannot decode {name} ({fmt.upper()}): {exc.err or exc}.",
            "The file may be damaged; re-export it from the imager.",
        ) from exc
    if img is None or img.size == 0:
        raise ImageReadError(
            f"{name} is a damaged or truncated {fmt.upper()} file (OpenCV cannot decode it).",
            "Re-export the image; a copy interrupted part-way often causes this.",
        )
    if img.shape[0] != height or img.shape[1] != width:
        raise ImageReadError(
            f"{name} decodes to {img.shape[1]} × {img.shape[0]} pixels but its header says "
            f"{width} × {height}.",
            "The file is damaged; re-export it.",
        )
    pixels = _opencv_to_gray(name, img)
    meta = {"format": fmt, "n_pages": 1, "page": 0, "pixel_size_um": None,
            "samples_per_pixel": channels,
            "source_dtype": str(img.dtype)}
    meta.update(_shape_meta(pixels))
    return ImageData(pixels, effective_bit_depth(pixels), meta)


def _opencv_to_gray(name: str, img: np.ndarray) -> np.ndarray:
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(
            f"{name} holds {img.dtype} samples; only 8- and 16-bit images can be analysed.",
            "Export the image with 8 or 16 bits per sample.",
        )
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(img[..., 0])
    if channels == 2:  # gray + alpha
        return np.ascontiguousarray(img[..., 0])
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    raise ImageReadError(f"{name} has {channels} channels; expected gray, RGB or RGBA.")


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _check_complete(name: str, fmt: str, raw: bytes, width: int, height: int) -> None:
    """Reject a PNG/JPEG/BMP cut short (the decoder would otherwise fail noisily or pad)."""
    if fmt == "png":
        complete = b"IEND" in raw[-64:]
        what = "the IEND end chunk is missing"
    elif fmt == "jpeg":
        complete = b"\xff\xd9" in raw[-4096:]
        what = "the end-of-image marker is missing"
    else:
        offset, header_size = struct.unpack("<I", raw[10:14])[0], struct.unpack("<I", raw[14:18])[0]
        bpp_at, comp_at = (24, None) if header_size == 12 else (28, 30)
        bpp = struct.unpack("<H", raw[bpp_at:bpp_at + 2])[0]
        compression = struct.unpack("<I", raw[comp_at:comp_at + 4])[0] if comp_at else 0
        stride = ((width * bpp + 31) // 32) * 4
        complete = compression not in (0, 3) or len(raw) >= offset + stride * height
        what = f"{len(raw):,} bytes where the header needs {offset + stride * height:,}"
    if not complete:
        raise ImageReadError(
            f"{name} is a truncated {fmt.upper()} file ({what}).",
            "The imager may still be writing it, or the copy was interrupted; copy it again.",
        )


def _png_header(name: str, raw: bytes) -> tuple[int, int, int, int]:
    """Width, height, channels, bits per sample from the IHDR chunk."""
    # Signature (8) + chunk length (4) + b"IHDR" + width, height (4 each, big-endian)
    # + bit depth (1) + colour type (1).
    if len(raw) < 26 or raw[12:16] != b"IHDR":
        raise ImageReadError(
            f"{name} is a damaged PNG: its header (IHDR) is missing or cut short.",
            "Re-export the image.",
        )
    width, height = struct.unpack(">II", raw[16:24])
    return width, height, _PNG_CHANNELS.get(raw[25], 1), int(raw[24])


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_header(name: str, raw: bytes) -> tuple[int, int, int, int]:
    """Walk the JPEG marker segments to the first start-of-frame (SOFn) and read its size."""
    i, n = 2, len(raw)
    while i + 4 <= n:
        if raw[i] != 0xFF:
            break
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        seg_len = struct.unpack(">H", raw[i + 2:i + 4])[0]
        if marker in _SOF_MARKERS:
            if i + 10 > n:
                break
            bits = raw[i + 4]
            height, width = struct.unpack(">HH", raw[i + 5:i + 9])
            return width, height, int(raw[i + 9]), int(bits)
        if marker == 0xDA or seg_len < 2:  # start of scan before any frame header
            break
        i += 2 + seg_len
    raise ImageReadError(
        f"{name} is a damaged JPEG: no frame header (SOF) was found.",
        "Re-export the image.",
    )


def _bmp_header(name: str, raw: bytes) -> tuple[int, int, int, int]:
    if len(raw) < 34:
        raise ImageReadError(f"{name} is a damaged BMP: its header is cut short.",
                             "Re-export the image.")
    header_size = struct.unpack("<I", raw[14:18])[0]
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", raw[18:22])
        bpp = struct.unpack("<H", raw[24:26])[0]
    else:
        width, height = struct.unpack("<ii", raw[18:26])
        bpp = struct.unpack("<H", raw[28:30])[0]
    channels = {24: 3, 32: 4}.get(bpp, 1)
    return abs(width), abs(height), channels, 8  # negative height = top-down rows


# ---------------------------------------------------------------- shared


def _check_dims(name: str, width: int, height: int, max_side: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageReadError(
            f"{name} has no pixels (its header says {width} × {height}).",
            "The file is damaged or was written empty; re-export it.",
        )
    if width > max_side or height > max_side:
        megapixels = width * height / 1e6
        raise ImageReadError(
            f"{name} is {width:,} × {height:,} pixels ({megapixels:,.0f} megapixels), above the "
            f"limit of {max_side:,} pixels per side; it was not decoded.",
            "Raise imaging.max_pixels_side in agent.toml if such images are expected.",
        )


def _shape_meta(pixels: np.ndarray) -> dict[str, Any]:
    height, width = pixels.shape[:2]
    return {"width": int(width), "height": int(height), "dtype": str(pixels.dtype),
            "shape": [int(height), int(width)]}


def bits_to_full_scale(bit_depth: int | None, dtype: np.dtype) -> float:
    """The value of a fully white pixel for data of ``bit_depth`` effective bits."""
    if bit_depth is None:
        bit_depth = 8 if np.dtype(dtype) == np.uint8 else 16
    return float((1 << int(bit_depth)) - 1)


__all__ = [
    "BIT_DEPTHS",
    "DEFAULT_MAX_SIDE",
    "ImageData",
    "bits_to_full_scale",
    "effective_bit_depth",
    "read_image",
]
