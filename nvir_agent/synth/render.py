"""Render one bright-field image of a liver spheroid whose look follows its viability.

The latent viability v (ATP normalised to vehicle controls, 0 to about 1.2)
drives the biology: a healthy spheroid (v ≈ 1) is compact with a smooth,
near-circular border, a dense dark core, a textured outer band of cells, a thin
bright rim and a fringe of loose cells. As v falls the body loses compaction:
its border frays, it becomes lighter and more translucent, a halo of shed dead
cells and clumps grows around it, its size swells then shrinks, and at low v it
breaks into pieces. Nuisances that do not depend on v (illumination level and
gradient, vignetting, the round-bottom well wall, focus, noise, off-centre
position, bubbles, debris, bit depth, frame size, magnification) are drawn
from :class:`NuisanceRanges` unless a :class:`Conditions` field fixes them.

The image is modelled as illumination × transmission: the background
transmits 1, the spheroid body, cells and debris transmit less. The returned
mask is the exact spheroid body (the pieces, never the halo), computed before
blur and noise. Every random draw comes from ``np.random.default_rng`` streams
derived from the seed, so a seed gives the same image every time; fixing one
Conditions field does not change any other draw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np

from nvir_agent.errors import DataError

# Measured on a real healthy spheroid (DESIGN.md): background 0.65 of full
# scale; core 0.12; 60–120 px deep (radius 277 px) 0.16; outer 30 px band 0.30.
CELLS_PER_RADIUS = 25.0  # a liver cell is ~1/25 of a 250 µm spheroid radius


@dataclass(frozen=True)
class Conditions:
    """Nuisances of one image. None means "draw from the ranges".

    - width, height: frame size in pixels; bits: 8 or 16 (16 holds 12-bit data).
    - diameter_frac: diameter of the spheroid when healthy, as a fraction of the
      frame width (magnification); the rendered size also changes with v.
    - offset: (dx, dy) of the spheroid centre from the frame centre, as fractions
      of the frame width and height.
    - illumination: background level as a fraction of full scale (≈0.65).
    - gradient: relative change of illumination across the frame (linear).
    - vignetting: relative darkening in the frame corners.
    - well_wall: 0 = the well wall is outside the frame, 1 = a dark wall arc
      reaches close to the spheroid.
    - focus: defocus blur (Gaussian sigma) in cell diameters; 0 = sharp.
    - noise: read-noise standard deviation as a fraction of full scale (shot
      noise scales with it).
    - bubbles, debris: how many air bubbles and debris specks.
    - fragmented: whether the body is broken into pieces (drawn from v if None).
    - identity: seed of the spheroid's own shape and size, so that one well
      keeps its spheroid across days while ``seed`` changes.

    Appearance seen on real ImageXpress plates (tests/data/real-brightfield),
    off unless set (None = off, so images rendered before they existed stay the same):

    - streaks: amplitude of the radial streak texture of the well bottom (≈0.04).
    - dark_body: a very dark body with almost no inner texture.
    - satellites: how many satellite clusters of cells lie near the body.
    - aggregates: how many other aggregates (35–60 % of the body's area) lie in
      the well; the mask stays the main body.
    - fibres: how many long fibres cross the frame.
    """

    width: int | None = None
    height: int | None = None
    bits: int | None = None
    diameter_frac: float | None = None
    offset: tuple[float, float] | None = None
    illumination: float | None = None
    gradient: float | None = None
    vignetting: float | None = None
    well_wall: float | None = None
    focus: float | None = None
    noise: float | None = None
    bubbles: int | None = None
    debris: int | None = None
    fragmented: bool | None = None
    identity: int | None = None
    streaks: float | None = None
    dark_body: bool | None = None
    satellites: int | None = None
    aggregates: int | None = None
    fibres: int | None = None


@dataclass(frozen=True)
class NuisanceRanges:
    """Where undetermined nuisances are drawn from (uniform unless noted)."""

    frame_sizes: tuple[tuple[int, int], ...] = ((1024, 1024),)
    bits: tuple[int, ...] = (8,)
    diameter_frac: tuple[float, float] = (0.15, 0.45)
    offset: float = 0.08  # max |dx|, |dy| as a fraction of the frame
    illumination: tuple[float, float] = (0.58, 0.72)
    gradient: tuple[float, float] = (0.0, 0.08)
    vignetting: tuple[float, float] = (0.0, 0.15)
    well_wall_p: float = 0.3  # chance that the wall is in frame at all
    well_wall: tuple[float, float] = (0.2, 0.7)
    focus: tuple[float, float] = (0.0, 0.6)
    noise: tuple[float, float] = (0.003, 0.012)
    bubbles_p: float = 0.1  # chance of any bubble; then 1..bubbles_max
    bubbles_max: int = 1
    debris: tuple[int, int] = (0, 20)


TRAINING = NuisanceRanges()
WIDE = NuisanceRanges(
    frame_sizes=((1024, 1024), (1024, 768), (768, 1024), (1280, 960)),
    bits=(8, 16),
    diameter_frac=(0.07, 0.55),
    offset=0.18,
    illumination=(0.42, 0.85),
    gradient=(0.0, 0.2),
    vignetting=(0.0, 0.35),
    well_wall_p=0.5,
    well_wall=(0.1, 1.0),
    focus=(0.0, 1.6),
    noise=(0.002, 0.03),
    bubbles_p=0.3,
    bubbles_max=3,
    debris=(0, 80),
)


@dataclass
class Rendered:
    """A rendered image, its exact spheroid-body mask and what was drawn."""

    image: np.ndarray  # 2-D uint8, or uint16 holding 12-bit data
    mask: np.ndarray  # 2-D bool, the spheroid body (pieces included, halo excluded)
    viability: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def bit_depth(self) -> int:
        return 8 if self.image.dtype == np.uint8 else 12


# --------------------------------------------------------------------------- draws


def _draw_nuisances(rng: np.random.Generator, ranges: NuisanceRanges, c: Conditions) -> Conditions:
    """Draw every nuisance (always in the same order), then let ``c`` override."""
    size = ranges.frame_sizes[int(rng.integers(len(ranges.frame_sizes)))]
    drawn = Conditions(
        width=int(size[0]),
        height=int(size[1]),
        bits=int(ranges.bits[int(rng.integers(len(ranges.bits)))]),
        diameter_frac=float(rng.uniform(*ranges.diameter_frac)),
        offset=(float(rng.uniform(-1, 1) * ranges.offset), float(rng.uniform(-1, 1) * ranges.offset)),
        illumination=float(rng.uniform(*ranges.illumination)),
        gradient=float(rng.uniform(*ranges.gradient)),
        vignetting=float(rng.uniform(*ranges.vignetting)),
        well_wall=float(rng.uniform(*ranges.well_wall)) if rng.random() < ranges.well_wall_p else 0.0,
        focus=float(rng.uniform(*ranges.focus)),
        noise=float(rng.uniform(*ranges.noise)),
        bubbles=int(rng.integers(1, ranges.bubbles_max + 1)) if rng.random() < ranges.bubbles_p else 0,
        debris=int(rng.integers(ranges.debris[0], ranges.debris[1] + 1)),
        fragmented=None,
        identity=int(rng.integers(2**31)),
    )
    given = {f.name: getattr(c, f.name) for f in fields(c) if getattr(c, f.name) is not None}
    return replace(drawn, **given)


def _check(c: Conditions, viability: float) -> None:
    if not math.isfinite(viability) or viability < 0 or viability > 2.0:
        raise DataError(f"viability {viability!r} is outside 0–2", "use a value like 0.0–1.2")
    if c.bits not in (8, 16):
        raise DataError(f"bits={c.bits} is not supported", "use 8 or 16 (16 holds 12-bit data)")
    if not (16 <= c.width <= 16384 and 16 <= c.height <= 16384):
        raise DataError(f"frame {c.width}×{c.height} is out of range", "use 16–16384 pixels a side")
    if not (0.01 <= c.diameter_frac <= 0.9):
        raise DataError(f"diameter_frac={c.diameter_frac} is out of range", "use 0.05–0.6")


# --------------------------------------------------------------------------- biology


def _size_factor(v: float) -> float:
    """Swelling as viability starts to fall, shrinking when it collapses."""
    swell = 0.10 * math.exp(-(((v - 0.7) / 0.18) ** 2))
    shrink = 0.28 * min(max((0.5 - v) / 0.5, 0.0), 1.0)
    growth = 0.25 * max(v - 1.0, 0.0)  # more cells than the controls: a larger body
    return 1.0 + swell - shrink + growth


def _border_radii(v: float, r: float, n: int, shape_rng: np.random.Generator,
                  rng: np.random.Generator) -> np.ndarray:
    """Radius of the body border at n angles: a mild ellipse plus fraying as v falls."""
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    loss = min(max(1.0 - v, 0.0), 1.0)  # loss of compaction
    rad = np.ones(n)
    # identity: mild ellipticity and lobes of this particular spheroid
    for k, amp in ((2, 0.035), (3, 0.015), (4, 0.01)):
        rad += shape_rng.uniform(0, amp) * np.cos(k * theta + shape_rng.uniform(0, 2 * np.pi))
    # loss of compaction: lobes and fraying grow as v falls
    for k in range(3, 9):
        rad += rng.normal(0, 0.045 * loss) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    ks = np.arange(9, 60)
    amps = rng.normal(0, 1, ks.size) * (0.002 + 0.014 * loss**1.2) / (ks / 9.0)
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    rad += (amps[:, None] * np.cos(ks[:, None] * theta[None, :] + phases[:, None])).sum(0)
    return r * np.clip(rad, 0.55, 1.6)


def _cell_texture(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std noise whose grains are about one cell across."""
    h, w = shape
    sh, sw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    low = rng.standard_normal((sh, sw), dtype=np.float32)
    up = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return up / max(float(up.std()), 1e-6)


def _cell_spots(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, weights: np.ndarray,
                cell: float) -> np.ndarray:
    """Absorbance of round cells (peak ≈ weight) at the given positions.

    Loose and dead cells in bright field are dark discs with a lighter,
    refractile centre: a wide dark Gaussian minus a narrow one.
    """
    h, w = shape
    img = np.zeros((h, w), np.float32)
    xi, yi = np.rint(xs).astype(int), np.rint(ys).astype(int)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    np.add.at(img, (yi[ok], xi[ok]), weights[ok].astype(np.float32))
    sigma = max(cell * 0.4, 0.6)
    dark = cv2.GaussianBlur(img, (0, 0), sigma) * np.float32(2 * np.pi * sigma * sigma)
    if sigma < 1.5:  # too few pixels per cell to show a centre
        return dark
    s2 = 0.4 * sigma
    centre = cv2.GaussianBlur(img, (0, 0), s2) * np.float32(2 * np.pi * s2 * s2)
    return dark - np.float32(0.45) * centre


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the non-zero pixels (the whole array when empty)."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return 0, 0, mask.shape[1], mask.shape[0]
    return x, y, x + w, y + h


def _render_body(v: float, r: float, cx: float, cy: float, box: tuple[int, int, int, int],
                 fragmented: bool, shape_rng: np.random.Generator,
                 rng: np.random.Generator,
                 dark: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Transmission and mask of the spheroid, its fringe and halo, inside ``box``."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    lx, ly = cx - x0, cy - y0
    loss = min(max(1.0 - v, 0.0), 1.0)
    vigour = min(max(v, 0.0), 1.3)
    cell = max(r / CELLS_PER_RADIUS, 1.5)

    n = 720
    radii = _border_radii(v, r, n, shape_rng, rng)
    theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    poly = np.stack([lx + radii * np.cos(theta), ly + radii * np.sin(theta)], 1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.rint(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)

    cracks = []
    if fragmented:
        for _ in range(int(rng.integers(1, 4))):
            ang = rng.uniform(0, np.pi)
            px, py = lx + rng.normal(0, 0.25 * r), ly + rng.normal(0, 0.25 * r)
            width = max(2, int(round(rng.uniform(0.05, 0.12) * r)))
            # a jagged crack: a line across the body with sideways wander
            t = np.linspace(-2.0 * r, 2.0 * r, 17)
            wander = np.cumsum(rng.normal(0, 0.06 * r, t.size))
            wander -= wander.mean()
            xs = px + t * math.cos(ang) - wander * math.sin(ang)
            ys = py + t * math.sin(ang) + wander * math.cos(ang)
            pts = np.rint(np.stack([xs, ys], 1)).astype(np.int32)
            cv2.polylines(mask, [pts], False, 0, width, cv2.LINE_8)
            cracks.append({"angle": float(ang), "width_px": width})
        # the pieces drift apart; crumbs smaller than a few cells join the halo
        count, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        drift = rng.uniform(0.04, 0.15) * r
        moved = np.zeros_like(mask)
        for i in range(1, count):
            if stats[i, cv2.CC_STAT_AREA] < 30 * cell * cell:
                continue
            ux, uy = cents[i][0] - lx, cents[i][1] - ly
            norm = math.hypot(ux, uy) or 1.0
            shift = np.float32([[1, 0, drift * ux / norm], [0, 1, drift * uy / norm]])
            piece = (labels == i).astype(np.uint8)
            moved |= cv2.warpAffine(piece, shift, (w, h), flags=cv2.INTER_NEAREST)
        mask = moved

    # work only on the body's bounding box plus a margin for the rim
    rim_w = max(1.0, r / 140.0)
    margin = int(math.ceil(10 * rim_w)) + 2
    bx0, by0, bx1, by1 = _bbox(mask)
    bx0, by0 = max(0, bx0 - margin), max(0, by0 - margin)
    bx1, by1 = min(w, bx1 + margin), min(h, by1 + margin)
    sub = (slice(by0, by1), slice(bx0, bx1))
    m_sub = mask[sub]
    inside = cv2.distanceTransform(m_sub, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - m_sub, cv2.DIST_L2, 3)
    d = inside * np.float32(1.0 / r)  # depth into the body in radii

    # body transmission: dense dark core, lighter textured outer band (calibrated on
    # the real healthy spheroid of DESIGN.md); lighter and more translucent as v falls
    t_core = 0.40 - 0.23 * min(vigour, 1.0) ** 0.9 - 0.06 * max(vigour - 1.0, 0.0)
    a_slow = 0.225 - 0.05 * loss
    a_fast = 0.23 - 0.10 * loss
    l_slow = 0.25 + 0.25 * loss
    l_fast = 0.05 + 0.10 * loss
    body = (t_core + a_slow * cv2.exp(d * np.float32(-1.0 / l_slow))
            + a_fast * cv2.exp(d * np.float32(-1.0 / l_fast)))
    tex = _cell_texture(rng, d.shape, cell)
    patch = _cell_texture(rng, d.shape, cell * 4.0)
    amp = (0.30 * cv2.exp(d * np.float32(-1.0 / 0.09))
           + (0.045 + 0.04 * loss) * cv2.exp(d * np.float32(-1.0 / 0.35))
           + np.float32(0.008 + 0.03 * loss))
    if dark:  # a dense body with almost no inner texture (real ImageXpress wells)
        body = np.float32(0.45) * body
        amp = amp * cv2.exp(d * np.float32(-1.0 / 0.03))
    body += amp * tex + np.float32(0.08 * loss) * patch
    np.clip(body, 0.03, 0.95, out=body)
    # thin bright rim just outside the border (fades as the border loosens)
    near = 1.0 + np.float32(0.10 * (1.0 - 0.7 * loss)) * cv2.exp(outside * np.float32(-1.0 / rim_w))
    # soft body edge (about one pixel) so the border is not a jagged step
    alpha = np.clip(0.5 + inside - outside, 0.0, 1.0)
    body_near = near + alpha * (body - near)

    # loose cells at the border, shed dead cells and clumps in a halo around the body
    ys_b, xs_b = np.nonzero(cv2.morphologyEx(m_sub, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)))
    xs_b, ys_b = xs_b + bx0, ys_b + by0
    n_fringe = int(len(xs_b) / cell * (0.16 + 0.3 * loss))
    n_halo = int((0.04 + 2.2 * loss**1.5) * (2 * math.pi * r * r) / (cell * cell) * 0.25)
    n_clumps = int(rng.poisson(1.0 + 14.0 * loss**1.3))
    xs_all, ys_all, wt_all = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
    if len(xs_b) and n_fringe:
        i = rng.integers(0, len(xs_b), n_fringe)
        ang = rng.uniform(0, 2 * np.pi, n_fringe)
        d = rng.uniform(0.2, 1.4, n_fringe) * cell
        xs_all.append(xs_b[i] + d * np.cos(ang))
        ys_all.append(ys_b[i] + d * np.sin(ang))
        wt_all.append(rng.uniform(0.35, 0.8, n_fringe))
    # halo and clumps: radial distance from the centre between the border and ~2 radii
    tot = n_halo + n_clumps
    if tot:
        ang = rng.uniform(0, 2 * np.pi, tot)
        k = np.clip((ang / (2 * np.pi) * n).astype(int), 0, n - 1)
        dist = radii[k] + np.minimum(rng.exponential(0.35 * r, tot), 1.1 * r) + cell * 0.5
        hx, hy = lx + dist * np.cos(ang), ly + dist * np.sin(ang)
        xs_all.append(hx[:n_halo])
        ys_all.append(hy[:n_halo])
        wt_all.append(rng.uniform(0.3, 0.9, n_halo))
        for j in range(n_halo, tot):
            m = int(rng.integers(4, 25))
            spread = cell * (0.6 + 0.25 * math.sqrt(m))
            xs_all.append(hx[j] + rng.normal(0, spread, m))
            ys_all.append(hy[j] + rng.normal(0, spread, m))
            wt_all.append(rng.uniform(0.4, 0.9, m))
    spots = _cell_spots((h, w), np.concatenate(xs_all), np.concatenate(ys_all),
                        np.concatenate(wt_all), cell)
    trans = 1.0 - np.float32(0.75) * np.minimum(spots, np.float32(1.2))
    # the body hides whatever cells lie behind it
    trans[sub] = body_near + (1.0 - alpha) * (trans[sub] - 1.0)

    info = {"radius_px": float(r), "cell_px": float(cell), "cracks": cracks,
            "fringe_cells": n_fringe, "halo_cells": n_halo, "clumps": n_clumps,
            "core_transmission": float(t_core)}
    return trans, mask.astype(bool), info


# --------------------------------------------------------------------------- optics


def _illumination(c: Conditions, rng: np.random.Generator, well_c: tuple[float, float],
                  well_r: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Smooth illumination × well-wall field, computed coarse and upsampled."""
    w, h = c.width, c.height
    f = 8 if min(w, h) >= 128 else 1
    sw, sh = max(2, w // f), max(2, h // f)
    xs = (np.arange(sw, dtype=np.float32) + 0.5) * (w / sw)
    ys = (np.arange(sh, dtype=np.float32) + 0.5) * (h / sh)
    gx, gy = np.meshgrid(xs, ys)
    ang = rng.uniform(0, 2 * np.pi)
    proj = ((gx - w / 2) * math.cos(ang) + (gy - h / 2) * math.sin(ang)) / max(w, h)
    field_ = c.illumination * (1.0 + c.gradient * proj)
    rr2 = ((gx - w / 2) ** 2 + (gy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    field_ *= 1.0 - c.vignetting * rr2
    wall_dark = rng.uniform(0.15, 0.35)
    # faint uneven background: out-of-focus dirt on the plate lid and optics
    mottle_amp = float(rng.uniform(0.0, 0.02))
    mottle = cv2.resize(rng.standard_normal((5, 5)).astype(np.float32), (sw, sh),
                        interpolation=cv2.INTER_CUBIC)
    field_ *= 1.0 + mottle_amp * mottle
    if c.well_wall > 0:
        rw = np.sqrt((gx - well_c[0]) ** 2 + (gy - well_c[1]) ** 2) / well_r
        # darkening toward the wall over the outer third, then the dark wall itself
        toward = np.clip((rw - 0.65) / 0.35, 0.0, 1.0) ** 2
        edge = 1.0 / (1.0 + np.exp(-(rw - 1.0) / 0.025))
        field_ *= (1.0 - 0.25 * toward) * (1.0 - edge) + wall_dark * edge
    full = cv2.resize(field_.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return full, {"gradient_angle": float(ang), "wall_darkness": float(wall_dark),
                  "mottle": mottle_amp}


def _draw_bubbles_and_debris(trans: np.ndarray, c: Conditions, rng: np.random.Generator,
                             body: tuple[float, float, float]) -> list[dict[str, Any]]:
    h, w = trans.shape
    bx, by, br = body
    out = []
    for _ in range(c.bubbles):
        rad = rng.uniform(0.02, 0.08) * min(w, h)
        for _try in range(8):  # keep bubbles off the spheroid body
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            if math.hypot(x - bx, y - by) > br + rad * 1.2:
                break
        thick = max(1, int(round(rad * rng.uniform(0.12, 0.25))))
        ctr = (int(round(x * 16)), int(round(y * 16)))
        cv2.circle(trans, ctr, int(round(rad * 16)), 1.12, -1, cv2.LINE_AA, shift=4)
        cv2.circle(trans, ctr, int(round(rad * 16)), 0.35, thick, cv2.LINE_AA, shift=4)
        out.append({"x": float(x), "y": float(y), "r": float(rad)})
    scale = min(w, h) / 1024.0
    for _ in range(c.debris):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        rad = max(1, int(round(rng.uniform(1.0, 4.0) * scale)))
        val = float(rng.uniform(0.25, 0.75))
        if rng.random() < 0.3:  # a fibre
            ang = rng.uniform(0, np.pi)
            ln = rng.uniform(6, 30) * scale
            p1 = (int(x - ln * math.cos(ang)), int(y - ln * math.sin(ang)))
            p2 = (int(x + ln * math.cos(ang)), int(y + ln * math.sin(ang)))
            cv2.line(trans, p1, p2, val, max(1, rad // 2), cv2.LINE_AA)
        else:
            cv2.circle(trans, (int(x), int(y)), rad, val, -1, cv2.LINE_AA)
    return out


def _draw_real_like(trans: np.ndarray, c: Conditions, rng: np.random.Generator,
                    body: tuple[float, float, float]) -> dict[str, Any]:
    """Satellite clusters, other aggregates, fibres and the radial streaks of the
    well bottom, as seen on real ImageXpress plates; none of them is in the mask."""
    h, w = trans.shape
    bx, by, br = body
    cell = max(br / CELLS_PER_RADIUS, 1.5)
    out: dict[str, Any] = {"satellite_list": [], "aggregate_list": []}
    xs, ys, wt = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
    for _ in range(int(c.satellites or 0)):  # compact clusters of 8–40 cells
        ang, dist = rng.uniform(0, 2 * np.pi), br * rng.uniform(1.3, 2.6)
        x, y = bx + dist * math.cos(ang), by + dist * math.sin(ang)
        m = int(rng.integers(8, 41))
        spread = cell * (0.3 + 0.18 * math.sqrt(m))
        xs.append(x + rng.normal(0, spread, m))
        ys.append(y + rng.normal(0, spread, m))
        wt.append(rng.uniform(0.8, 1.2, m))
        out["satellite_list"].append({"x": float(x), "y": float(y), "cells": m})
    if len(xs) > 1:
        spots = _cell_spots((h, w), np.concatenate(xs), np.concatenate(ys), np.concatenate(wt),
                            cell)
        trans *= 1.0 - np.float32(0.8) * np.minimum(spots, np.float32(1.1))
    for _ in range(int(c.aggregates or 0)):  # smaller, textured, roughly round bodies
        ra = br * math.sqrt(rng.uniform(0.35, 0.6))
        for _try in range(12):
            ang, dist = rng.uniform(0, 2 * np.pi), br * rng.uniform(1.8, 3.2)
            x, y = bx + dist * math.cos(ang), by + dist * math.sin(ang)
            if ra < x < w - ra and ra < y < h - ra:
                break
        disc = np.zeros((h, w), np.uint8)
        axes = (int(round(ra * rng.uniform(0.85, 1.15) * 16)), int(round(ra * 16)))
        cv2.ellipse(disc, (int(round(x * 16)), int(round(y * 16))), axes,
                    float(rng.uniform(0, 180)), 0, 360, 1, -1, cv2.LINE_AA, shift=4)
        x0, y0, x1, y1 = _bbox(disc)
        sub = (slice(y0, y1), slice(x0, x1))
        tex = _cell_texture(rng, (y1 - y0, x1 - x0), cell)
        level = np.float32(rng.uniform(0.25, 0.4)) + np.float32(0.08) * tex
        alpha = cv2.GaussianBlur(disc[sub].astype(np.float32), (0, 0), 1.0)
        trans[sub] = trans[sub] * (1.0 - alpha) + np.clip(level, 0.05, 0.9) * alpha
        out["aggregate_list"].append({"x": float(x), "y": float(y), "r": float(ra)})
    for _ in range(int(c.fibres or 0)):  # long, thin, slightly curved fibres
        ang = rng.uniform(0, np.pi)
        x, y, ln = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.25, 0.6) * w
        t = np.linspace(-0.5, 0.5, 24) * ln
        bend = rng.normal(0, 0.04) * ln * (1 - (2 * t / ln) ** 2)
        pts = np.stack([x + t * math.cos(ang) - bend * math.sin(ang),
                        y + t * math.sin(ang) + bend * math.cos(ang)], 1)
        cv2.polylines(trans, [np.rint(pts * 16).astype(np.int32)], False,
                      float(rng.uniform(0.3, 0.6)), max(1, int(round(w / 512))), cv2.LINE_AA,
                      shift=4)
    if c.streaks:  # radial streaks of the well bottom, from the well centre outward
        f = 4 if min(w, h) >= 256 else 1
        gy, gx = np.mgrid[0:h:f, 0:w:f].astype(np.float32)
        theta = np.arctan2(gy - by, gx - bx)
        rad = np.hypot(gx - bx, gy - by) / max(w, h)
        n_ang = 1440
        profile = rng.standard_normal(n_ang).astype(np.float32)
        idx = ((theta + np.pi) / (2 * np.pi) * n_ang).astype(np.int32) % n_ang
        along = _cell_texture(rng, gx.shape, 24.0 / f)  # streaks break up along their length
        field_ = profile[idx] * np.clip(rad / 0.15, 0.0, 1.0) * (0.6 + 0.4 * along)
        field_ = cv2.resize(field_, (w, h), interpolation=cv2.INTER_LINEAR)
        trans *= 1.0 + np.float32(c.streaks) * field_
    return out


def _defocus(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian defocus; wide blurs run on a reduced copy (same look, far faster)."""
    if sigma <= 0.3:
        return img
    if sigma <= 6.0:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape
    k = sigma / 3.0
    small = cv2.resize(img, (max(2, int(w / k)), max(2, int(h / k))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / k)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- entry point


def render_spheroid(viability: float, seed: int, conditions: Conditions | None = None,
                    ranges: NuisanceRanges = TRAINING) -> Rendered:
    """Render a bright-field spheroid image for latent viability ``viability``.

    Deterministic for ``seed``; each non-None field of ``conditions`` replaces
    the random draw from ``ranges``. Raises DataError for impossible settings.
    """
    v = float(viability)
    ss = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF)
    # a sixth stream for the real-plate appearance leaves the first five unchanged
    nuis_rng, bio_rng, layout_rng, optics_rng, noise_rng, real_rng = (
        np.random.default_rng(s) for s in ss.spawn(6))
    c = _draw_nuisances(nuis_rng, ranges, conditions or Conditions())
    _check(c, v)
    shape_rng = np.random.default_rng(int(c.identity))
    w, h = c.width, c.height

    # identity: this spheroid's own size and its exact spot in the well
    size_var = float(shape_rng.normal(1.0, 0.06))
    r = 0.5 * c.diameter_frac * w * size_var * _size_factor(v)
    cx = w / 2 + c.offset[0] * w + float(shape_rng.normal(0, 0.004)) * w
    cy = h / 2 + c.offset[1] * h + float(shape_rng.normal(0, 0.004)) * h
    fragmented = c.fragmented
    p_frag = min(max((0.35 - v) / 0.35, 0.0), 1.0) * 0.85
    frag_draw = bio_rng.random()
    if fragmented is None:
        fragmented = bool(frag_draw < p_frag)

    trans = np.ones((h, w), np.float32)
    mask = np.zeros((h, w), bool)
    reach = 2.4 * r + 4
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    x1, y1 = min(w, int(cx + reach) + 1), min(h, int(cy + reach) + 1)
    info: dict[str, Any] = {}
    if x1 - x0 > 2 and y1 - y0 > 2:
        body_t, body_m, info = _render_body(v, r, cx, cy, (x0, y0, x1, y1), fragmented,
                                            shape_rng, bio_rng, dark=bool(c.dark_body))
        trans[y0:y1, x0:x1] = body_t
        mask[y0:y1, x0:x1] = body_m

    bubbles = _draw_bubbles_and_debris(trans, c, layout_rng, (cx, cy, r))
    real_like = _draw_real_like(trans, c, real_rng, (cx, cy, r))

    # the round-bottom well is centred near the spheroid; well_wall brings its edge into view
    half_diag = 0.5 * math.hypot(w, h)
    far = math.hypot(abs(cx - w / 2) + w / 2, abs(cy - h / 2) + h / 2) * 1.05
    near = max(1.6 * r, 0.45 * min(w, h))
    well_r = far + (near - far) * min(max(c.well_wall, 0.0), 1.0) if c.well_wall > 0 else 4 * half_diag
    wc = (cx + float(optics_rng.normal(0, 0.03)) * w, cy + float(optics_rng.normal(0, 0.03)) * h)
    illum, optics = _illumination(c, optics_rng, wc, well_r)
    img = illum * trans

    cell = max(r / CELLS_PER_RADIUS, 1.5)
    sigma = c.focus * cell
    img = _defocus(img, sigma)
    # shot + read noise (shot variance grows with signal); OpenCV's per-thread
    # generator, seeded from this image's stream, is 4× faster than numpy's
    cv2.setRNGSeed(int(noise_rng.integers(2**31)))
    noise = cv2.randn(np.empty((h, w), np.float32), 0.0, 1.0)
    std = cv2.sqrt(img * np.float32(0.6 * c.noise * 0.02) + np.float32(c.noise**2))
    img += std * noise

    if c.bits == 8:
        image = cv2.convertScaleAbs(img, alpha=255.0)  # rounds and saturates
    else:
        image = np.clip(img * 4095.0 + 0.5, 0, 4095).astype(np.uint16)

    params = {k: (list(val) if isinstance(val, tuple) else val) for k, val in asdict(c).items()}
    params.update({"fragmented": bool(fragmented), "seed": int(seed), "viability": v,
                   "center": [float(cx), float(cy)], "size_factor": _size_factor(v),
                   "well_center": [float(wc[0]), float(wc[1])], "well_radius_px": float(well_r),
                   "blur_sigma_px": float(sigma), "bubble_list": bubbles, **optics, **info,
                   **real_like})
    return Rendered(image=image, mask=mask, viability=v, params=params)
