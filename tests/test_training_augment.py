"""The paper's augmentations: shape and type kept, deterministic for a seed,
intensity maps as albumentations defines them."""

from __future__ import annotations

import numpy as np
import pytest

from nvir_agent.training.augment import (
    AugmentSettings,
    augment,
    brightness_contrast_lut,
    gamma_lut,
    tone_curve_lut,
)

RAMP = np.arange(256, dtype=np.float64)


def crop(seed: int = 0, side: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)


def test_augmented_crops_keep_shape_and_dtype():
    img = crop()
    for seed in range(30):
        out = augment(img, np.random.default_rng(seed))
        assert out.shape == img.shape and out.dtype == np.uint8 and out.flags.c_contiguous


def test_the_same_seed_gives_the_same_augmentation_and_other_seeds_differ():
    img = crop()
    a = augment(img, np.random.default_rng(7))
    b = augment(img, np.random.default_rng(7))
    assert np.array_equal(a, b)
    outs = {augment(img, np.random.default_rng(s)).tobytes() for s in range(12)}
    assert len(outs) >= 10


def test_the_input_crop_is_never_modified():
    img = crop()
    before = img.copy()
    for seed in range(10):
        augment(img, np.random.default_rng(seed))
    assert np.array_equal(img, before)


def test_probability_zero_changes_nothing():
    img = crop()
    assert np.array_equal(augment(img, np.random.default_rng(1), AugmentSettings(p=0.0)), img)


def test_over_many_draws_every_transform_shows_up():
    img = np.zeros((16, 16), np.uint8)
    img[2, 5] = 200  # one bright pixel: where it lands shows the geometry
    img[10:, :] = 80  # a darker band: intensity maps change its value
    places, values = set(), set()
    for seed in range(200):
        out = augment(img, np.random.default_rng(seed))
        places.add(np.unravel_index(int(np.argmax(out)), out.shape))
        values.add(int(out[8, 8]))
    assert len(places) == 8  # the 8 symmetries of the square (flips, rot90, transpose)
    assert len(values) > 20  # brightness/contrast, gamma, tone curve, CLAHE


def test_brightness_contrast_gamma_and_tone_curve_match_their_definitions():
    bc = brightness_contrast_lut(RAMP, 0.1, 0.2)
    assert bc[0] == pytest.approx(25.5) and bc[100] == pytest.approx(145.5)
    assert bc[255] == 255.0  # clipped
    g = gamma_lut(RAMP, 2.0)
    assert g[255] == pytest.approx(255.0) and g[51] == pytest.approx(255 * 0.2**2)
    assert np.allclose(gamma_lut(RAMP, 1.0), RAMP)
    tc = tone_curve_lut(RAMP, 0.25, 0.75)
    assert tc[0] == 0.0 and tc[255] == pytest.approx(255.0)
    # Bézier (0, 0.25, 0.75, 1) at t = 0.5: 3·.5·.25·.25 + 3·.25·.5·.75 + .125 = 0.5
    assert tone_curve_lut(np.array([127.5]), 0.25, 0.75)[0] == pytest.approx(127.5)
    assert np.all(np.diff(tc) >= 0)


def test_augment_rejects_what_is_not_an_8_bit_plane():
    with pytest.raises(ValueError, match="2-D uint8"):
        augment(np.zeros((8, 8), np.uint16), np.random.default_rng(0))
    with pytest.raises(ValueError, match="2-D uint8"):
        augment(np.zeros((8, 8, 3), np.uint8), np.random.default_rng(0))


def test_optional_defocus_blur_is_off_by_default_and_softens_crops_when_on():
    img = crop(side=64)
    plain = [augment(img, np.random.default_rng(s)) for s in range(20)]
    blurred = [augment(img, np.random.default_rng(s), AugmentSettings(blur=0.05))
               for s in range(20)]
    # the same draws up to CLAHE; then about half of the crops get blurred
    softened = sum(b.std() < 0.8 * p.std() for p, b in zip(plain, blurred, strict=True))
    assert 4 <= softened <= 16
    assert all(b.shape == img.shape and b.dtype == np.uint8 for b in blurred)


def test_geometric_augmentation_only_rearranges_pixels():
    img = crop(side=32)
    symmetries = {np.rot90(m, k).tobytes() for m in (img, img.T) for k in range(4)}
    seen = set()
    for seed in range(40):
        out = augment(img, np.random.default_rng(seed), AugmentSettings(intensity=False))
        assert out.tobytes() in symmetries
        seen.add(out.tobytes())
    assert len(seen) == 8


def test_optional_noise_roughens_a_flat_crop_and_is_off_by_default():
    flat = np.full((64, 64), 128, np.uint8)
    geometric = AugmentSettings(intensity=False)
    assert all(augment(flat, np.random.default_rng(s), geometric).std() == 0 for s in range(10))
    noisy = [augment(flat, np.random.default_rng(s), AugmentSettings(intensity=False, noise=0.05))
             for s in range(20)]
    assert 4 <= sum(n.std() > 1.0 for n in noisy) <= 16
    assert max(n.std() for n in noisy) < 0.05 * 255 * 1.1
