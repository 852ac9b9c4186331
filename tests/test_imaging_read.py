"""Image reading: every format an imager writes, and every kind of broken file."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile

from nvir_agent.errors import ImageReadError
from nvir_agent.imaging.reading import effective_bit_depth, read_image

RNG = np.random.default_rng(7)
GRAY8 = RNG.integers(0, 256, (60, 80), dtype=np.uint8)
GRAY12 = RNG.integers(0, 4096, (60, 80)).astype(np.uint16)
RGB = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (60, 80, 4), dtype=np.uint8)
LUMA = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one page claims width × height 8-bit pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height),
               (279, 4, 1, min(width * height, 2**32 - 1))]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


# ------------------------------------------------------------------ formats


def test_tiff_8_bit_is_read_unchanged(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", GRAY8)
    img = read_image(tmp_path / "a.tif")
    assert img.pixels.dtype == np.uint8 and img.bit_depth == 8
    assert np.array_equal(img.pixels, GRAY8)
    assert img.meta["width"] == 80 and img.meta["height"] == 60 and img.meta["format"] == "tiff"


def test_tiff_12_bit_data_in_16_bit_container_reports_12_bits(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", GRAY12)
    img = read_image(tmp_path / "a.tif")
    assert img.pixels.dtype == np.uint16 and img.bit_depth == 12
    assert np.array_equal(img.pixels, GRAY12)


def test_tiff_full_16_bit_reports_16_bits(tmp_path):
    data = GRAY12.copy()
    data[0, 0] = 65535
    tifffile.imwrite(tmp_path / "a.tif", data)
    assert read_image(tmp_path / "a.tif").bit_depth == 16


@pytest.mark.parametrize("top,bits", [(255, 8), (1023, 10), (4095, 12), (16383, 14), (16384, 16)])
def test_effective_bit_depth_of_16_bit_data_follows_its_maximum(top, bits):
    data = np.zeros((4, 4), np.uint16)
    data[1, 1] = top
    assert effective_bit_depth(data) == bits


@pytest.mark.parametrize("compression", ["zlib", "lzw"])
def test_compressed_tiff_is_decoded(tmp_path, compression):
    tifffile.imwrite(tmp_path / "c.tif", GRAY12, compression=compression)
    img = read_image(tmp_path / "c.tif")
    assert np.array_equal(img.pixels, GRAY12)
    assert img.meta["compression"] != "NONE"


def test_planar_rgb_tiff_becomes_the_same_luma_as_contiguous(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", RGB, photometric="rgb")
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(RGB, -1, 0), photometric="rgb",
                     planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "p.tif").pixels,
                          read_image(tmp_path / "c.tif").pixels)


def test_one_pixel_tiff_keeps_two_axes(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.full((1, 1), 7, np.uint8))
    tifffile.imwrite(tmp_path / "row.tif", np.full((1, 5), 7, np.uint8))
    assert read_image(tmp_path / "one.tif").pixels.shape == (1, 1)
    assert read_image(tmp_path / "row.tif").pixels.shape == (1, 5)


def test_multi_page_tiff_reads_first_page_unless_asked(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.stack([GRAY8, 255 - GRAY8]))
    assert np.array_equal(read_image(tmp_path / "m.tif").pixels, GRAY8)
    second = read_image(tmp_path / "m.tif", page=1)
    assert np.array_equal(second.pixels, 255 - GRAY8)
    assert second.meta["n_pages"] == 2 and second.meta["page"] == 1


def test_missing_tiff_page_is_an_error_naming_the_page_count(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", GRAY8)
    with pytest.raises(ImageReadError, match="1 page.*page 3"):
        read_image(tmp_path / "m.tif", page=3)


@pytest.mark.parametrize("data,code", [(RGB, cv2.COLOR_RGB2GRAY), (RGBA, cv2.COLOR_RGBA2GRAY)])
def test_colour_tiff_becomes_opencv_luma(tmp_path, data, code):
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="rgb")
    img = read_image(tmp_path / "c.tif")
    assert img.pixels.ndim == 2
    assert np.array_equal(img.pixels, cv2.cvtColor(data, code))


@pytest.mark.parametrize("ext", [".png", ".bmp"])
def test_colour_png_and_bmp_become_luma(tmp_path, ext):
    cv2.imwrite(str(tmp_path / f"c{ext}"), cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    img = read_image(tmp_path / f"c{ext}")
    assert img.pixels.shape == (60, 80) and img.bit_depth == 8
    assert np.abs(img.pixels.astype(int) - LUMA).max() <= 1
    assert img.meta["samples_per_pixel"] == 3


def test_rgba_png_becomes_luma(tmp_path):
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(RGBA, cv2.COLOR_RGBA2BGRA))
    img = read_image(tmp_path / "c.png")
    assert np.array_equal(img.pixels, cv2.cvtColor(RGBA, cv2.COLOR_RGBA2GRAY))  # alpha ignored
    assert img.meta["samples_per_pixel"] == 4


def test_jpeg_is_read_like_opencv_imread_grayscale(tmp_path):
    cv2.imwrite(str(tmp_path / "c.jpg"), cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    img = read_image(tmp_path / "c.jpg")
    expected = cv2.imread(str(tmp_path / "c.jpg"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(img.pixels, expected)
    assert img.meta["format"] == "jpeg"


def test_16_bit_png_keeps_its_bits(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), GRAY12)
    img = read_image(tmp_path / "g.png")
    assert img.pixels.dtype == np.uint16 and img.bit_depth == 12
    assert np.array_equal(img.pixels, GRAY12)


def test_format_comes_from_content_not_extension(tmp_path):
    cv2.imwrite(str(tmp_path / "real.png"), GRAY8)
    (tmp_path / "named.tif").write_bytes((tmp_path / "real.png").read_bytes())
    img = read_image(tmp_path / "named.tif")
    assert img.meta["format"] == "png" and np.array_equal(img.pixels, GRAY8)


def test_pixel_size_from_imagej_metadata(tmp_path):
    tifffile.imwrite(tmp_path / "ij.tif", GRAY8, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"unit": "um"})
    assert read_image(tmp_path / "ij.tif").meta["pixel_size_um"] == pytest.approx(0.65)


def test_pixel_size_from_centimetre_resolution_tags(tmp_path):
    tifffile.imwrite(tmp_path / "cm.tif", GRAY8, resolution=(10000 / 1.3, 10000 / 1.3),
                     resolutionunit="CENTIMETER")
    assert read_image(tmp_path / "cm.tif").meta["pixel_size_um"] == pytest.approx(1.3)


def test_display_dpi_is_not_taken_for_a_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "dpi.tif", GRAY8, resolution=(96, 96), resolutionunit="INCH")
    assert read_image(tmp_path / "dpi.tif").meta["pixel_size_um"] is None


# ------------------------------------------------------------------ broken files


def test_zero_byte_file_is_rejected_with_its_name(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.tif is empty"):
        read_image(tmp_path / "empty.tif")


def test_truncated_tiff_is_rejected_before_decoding(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", GRAY12)
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.tif is truncated"):
        read_image(tmp_path / "cut.tif")


def test_truncated_compressed_tiff_is_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", GRAY12, compression="zlib")
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "cut.tif")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_truncated_png_jpeg_bmp_are_rejected(tmp_path, ext):
    cv2.imwrite(str(tmp_path / f"a{ext}"), cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    raw = (tmp_path / f"a{ext}").read_bytes()
    (tmp_path / f"cut{ext}").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match=rf"cut\{ext} is a truncated"):
        read_image(tmp_path / f"cut{ext}")


@pytest.mark.parametrize("ext", [".tif", ".png", ".jpg"])
def test_random_bytes_with_an_image_extension_are_rejected(tmp_path, ext):
    (tmp_path / f"noise{ext}").write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(ImageReadError, match=rf"noise\{ext} is not a TIFF, PNG, JPEG or BMP"):
        read_image(tmp_path / f"noise{ext}")


def test_tiff_header_claiming_100000_pixels_a_side_is_rejected_without_decoding(tmp_path):
    (tmp_path / "huge.tif").write_bytes(_tiff_header_only(100_000, 100_000))
    with pytest.raises(ImageReadError, match=r"100,000 × 100,000 pixels.*limit of 20,000"):
        read_image(tmp_path / "huge.tif")


def test_png_header_claiming_100000_pixels_a_side_is_rejected_without_decoding(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    raw = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
           + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))
    (tmp_path / "huge.png").write_bytes(raw)
    with pytest.raises(ImageReadError, match="100,000 × 100,000"):
        read_image(tmp_path / "huge.png")


def test_max_side_limit_is_configurable(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", GRAY8)
    with pytest.raises(ImageReadError, match="limit of 50 pixels"):
        read_image(tmp_path / "a.tif", max_side=50)


def test_zero_width_header_is_rejected(tmp_path):
    (tmp_path / "flat.tif").write_bytes(_tiff_header_only(0, 10))
    with pytest.raises(ImageReadError, match="no pixels"):
        read_image(tmp_path / "flat.tif")


def test_missing_file_and_folder_give_clear_errors(tmp_path):
    with pytest.raises(ImageReadError, match="Cannot open image"):
        read_image(tmp_path / "absent.tif")
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)
