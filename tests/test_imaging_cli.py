"""The `segment` command: JSON lines, the table, mask and overlay files, bad files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import tifffile

from nvir_agent.cli.imaging import SEGMENT_KEYS
from nvir_agent.cli.main import main


def _spheroid(h=300, w=400, r=50) -> np.ndarray:
    img = np.full((h, w), 170, np.uint8)
    cv2.circle(img, (w // 2, h // 2), r, 40, -1, cv2.LINE_AA)
    noise = np.random.default_rng(0).normal(0, 2, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def test_segment_json_prints_one_object_per_image_with_every_key(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", _spheroid())
    cv2.imwrite(str(tmp_path / "b.png"), _spheroid(r=40))
    rc = main(["segment", "--json", str(tmp_path / "a.tif"), str(tmp_path / "b.png")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(lines) == 2
    rows = [json.loads(line) for line in lines]
    for row in rows:
        assert set(SEGMENT_KEYS) <= set(row)
        assert row["found"] is True and row["error"] is None and row["qc"] == []
        assert len(row["centroid"]) == 2 and len(row["bbox"]) == 4
    assert rows[0]["equivalent_diameter_px"] > rows[1]["equivalent_diameter_px"]


def test_segment_writes_masks_the_size_of_the_image_and_overlays(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "well.tif", _spheroid(h=240, w=320, r=40))
    rc = main(["segment", str(tmp_path / "well.tif"), "--mask-out", str(tmp_path / "masks"),
               "--overlay-out", str(tmp_path / "overlays")])
    assert rc == 0
    mask = cv2.imread(str(tmp_path / "masks" / "well.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (240, 320) and set(np.unique(mask)) == {0, 255}
    assert abs(np.count_nonzero(mask) - np.pi * 40**2) < 0.1 * np.pi * 40**2
    overlay = cv2.imread(str(tmp_path / "overlays" / "well.png"))
    assert overlay.shape == (240, 320, 3)
    assert (overlay[..., 2] > overlay[..., 1] + 80).any()  # the red outline
    out = capsys.readouterr().out
    assert "well.tif" in out and "yes" in out


def test_unreadable_files_give_an_error_line_and_exit_code_1_without_traceback(tmp_path, capsys):
    (tmp_path / "zero.tif").write_bytes(b"")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(3).bytes(3000))
    tifffile.imwrite(tmp_path / "ok.tif", _spheroid())
    rc = main(["segment", "--json", str(tmp_path / "zero.tif"), str(tmp_path / "noise.png"),
               str(tmp_path / "ok.tif"), str(tmp_path / "absent.bmp")])
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert rc == 1 and "Traceback" not in captured.err
    assert [r["found"] for r in rows] == [None, None, True, None]
    assert "empty" in rows[0]["error"] and "not a TIFF, PNG, JPEG or BMP" in rows[1]["error"]
    assert "absent.bmp" in rows[3]["error"]


def test_image_without_spheroid_is_reported_not_failed(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "empty.png"), np.full((200, 200), 150, np.uint8))
    rc = main(["segment", "--json", str(tmp_path / "empty.png")])
    row = json.loads(capsys.readouterr().out)
    assert rc == 0 and row["found"] is False and row["qc"] == ["no_spheroid"]
    assert row["error"] is None and row["area_px"] is None
