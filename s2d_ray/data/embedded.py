"""The embedded default dataset: procedurally rendered action videos that ship as code.

Why it exists: the product must run a whole static-dynamic (S2D) distillation pipeline on a
CPU in minutes with no download. S2D distils *appearance* (still images) separately from
*motion*, so the default dataset is built to need both. Some classes can only be told apart
by appearance, and some only by motion. A method that drops the dynamic part loses accuracy
on the motion-only pairs, and a method that drops the static part confuses classes that move
the same way.

Classes (index order is the label order)::

    idx  name              appearance        motion
    ---  ----------------  ----------------  ------------------------------------
    0    square_right      red_square        moves right (wraps around)
    1    square_left       red_square        moves left (wraps around)
    2    disc_up           green_disc        moves up (wraps around)
    3    disc_down         green_disc        moves down (wraps around)
    4    bar_cw            blue_bar          rotates clockwise about its centre
    5    bar_ccw           blue_bar          rotates counter-clockwise
    6    ring_expand       yellow_ring       radius grows about 2x over the clip
    7    triangle_drift    magenta_triangle  drifts in a random direction
    8    cross_still       orange_cross      does not move
    9    diamond_right     cyan_diamond      moves right, exactly like square_right

Design rationale:

* **Motion-only pairs** (0/1, 2/3, 4/5) share one appearance distribution: same shape, colour
  and background family, and the same nuisance draws. Only the sign of the motion differs.
  Translation wraps around the frame (the frame is a torus), and rotation is periodic. So a
  uniform random start position or angle makes every single frame, and the mean over the clip,
  identically distributed within a pair. This holds exactly, not only roughly. No still image
  or temporal average can beat chance within these pairs.
* **Appearance-only pair** (0/9): ``diamond_right`` moves exactly like ``square_right``, so
  motion features alone cannot separate them. Classes 6-9 each have their own appearance.
* **Nuisance** keeps both cues from being trivial. It includes a random position, size,
  speed, orientation and background texture parameters, brightness and colour jitter, a
  static distractor blob in half the videos, per-frame flicker and per-pixel temporal noise.
* **Fixed duration**: a video always spans the same clip of time. ``num_frames`` only sets the
  temporal sampling, so ``render_video(c, s, num_frames=8)`` shows the same motion as the
  32-frame video at stride 4, apart from noise. The total motion (about half the frame width
  for translation, 100-150 degrees for rotation) keeps each step between the 8 evenly spaced
  frames the pipeline samples clearly visible. It stays below the aliasing limit for any
  ``num_frames >= 2``.

Everything is vectorised numpy on float32. Each video draws from its own generator, keyed by
(seed, class name), so rendering is pure and order-independent.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from s2d_ray.seeding import numpy_rng


@dataclass(frozen=True)
class EmbeddedClass:
    """One class of the embedded dataset; ``appearance`` groups classes that look alike."""

    name: str
    appearance: str
    motion: str
    description: str


EMBEDDED_CLASSES: tuple[EmbeddedClass, ...] = (
    EmbeddedClass("square_right", "red_square", "right", "A red square slides to the right."),
    EmbeddedClass("square_left", "red_square", "left", "A red square slides to the left."),
    EmbeddedClass("disc_up", "green_disc", "up", "A green disc slides upwards."),
    EmbeddedClass("disc_down", "green_disc", "down", "A green disc slides downwards."),
    EmbeddedClass("bar_cw", "blue_bar", "cw", "A blue bar rotates clockwise."),
    EmbeddedClass("bar_ccw", "blue_bar", "ccw", "A blue bar rotates counter-clockwise."),
    EmbeddedClass("ring_expand", "yellow_ring", "expand", "A yellow ring expands."),
    EmbeddedClass(
        "triangle_drift", "magenta_triangle", "drift", "A magenta triangle drifts at random."
    ),
    EmbeddedClass("cross_still", "orange_cross", "none", "An orange cross stays still."),
    EmbeddedClass("diamond_right", "cyan_diamond", "right", "A cyan diamond slides right."),
)

SOURCE_FRAMES: int = 32
DEFAULT_FRAMES: int = 8
DEFAULT_SIZE: int = 64
TRAIN_PER_CLASS: int = 40
TEST_PER_CLASS: int = 10
MIN_SIZE: int = 32

NUM_CLASSES: int = len(EMBEDDED_CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in EMBEDDED_CLASSES)


def _validate_classes(classes: tuple[EmbeddedClass, ...]) -> None:
    """Fail at import: RNG streams are keyed by class name, so duplicates would be twins."""
    names = [c.name for c in classes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"embedded dataset class names must be unique, duplicated: {dupes}")


_validate_classes(EMBEDDED_CLASSES)


def _motion_only_pairs() -> tuple[tuple[int, int], ...]:
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(EMBEDDED_CLASSES):
        groups.setdefault(c.appearance, []).append(i)
    return tuple((g[0], g[1]) for g in groups.values() if len(g) == 2)


#: Class-index pairs that share appearance and differ only in motion.
MOTION_ONLY_PAIRS: tuple[tuple[int, int], ...] = _motion_only_pairs()

# Per appearance group: base object colour, background family and background tint (RGB 0..1).
# Tints differ between groups so that the background also carries appearance information.
_STYLE: dict[str, tuple[tuple[float, float, float], str, tuple[float, float, float]]] = {
    "red_square": ((0.90, 0.20, 0.18), "stripes", (0.30, 0.32, 0.48)),
    "green_disc": ((0.22, 0.82, 0.30), "checker", (0.48, 0.38, 0.26)),
    "blue_bar": ((0.25, 0.40, 0.98), "blobs", (0.40, 0.46, 0.28)),
    "yellow_ring": ((0.98, 0.88, 0.20), "gradient", (0.26, 0.26, 0.34)),
    "magenta_triangle": ((0.88, 0.25, 0.88), "noise", (0.26, 0.44, 0.44)),
    "orange_cross": ((1.00, 0.55, 0.10), "stripes", (0.24, 0.40, 0.24)),
    "cyan_diamond": ((0.20, 0.88, 0.92), "checker", (0.46, 0.30, 0.40)),
}


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> np.ndarray:
    """Pixel-centre coordinates, cached because every video of a size reuses them."""
    c = np.arange(size, dtype=np.float32) + 0.5
    c.setflags(write=False)
    return c


def _wrapped_offsets(centres: np.ndarray, size: int) -> np.ndarray:
    """(T, size) signed torus distance from each pixel centre to each frame's object centre."""
    x = _pixel_centres(size)
    half = size / 2.0
    d = (x[None, :] - centres[:, None].astype(np.float32) + half) % size - half
    return d.astype(np.float32, copy=False)


def _alpha(sdf: np.ndarray) -> np.ndarray:
    """One-pixel anti-aliased coverage from a signed distance in pixels."""
    return np.clip(0.5 - sdf, 0.0, 1.0, out=sdf if sdf.dtype == np.float32 else None)


def _background(rng: np.random.Generator, family: str, size: int) -> np.ndarray:
    """A static (size, size) texture in [0, 1]; parameters are random, the family is not."""
    u = _pixel_centres(size) / size
    uy, ux = u[:, None], u[None, :]
    if family == "stripes":
        ang = rng.uniform(0.0, np.pi)
        freq = rng.uniform(3.0, 6.0)
        tex = 0.5 + 0.5 * np.sin(
            2 * np.pi * freq * (ux * np.cos(ang) + uy * np.sin(ang)) + rng.uniform(0, 2 * np.pi)
        )
    elif family == "checker":
        freq = rng.uniform(2.0, 4.0)
        ph = rng.uniform(0.0, 2 * np.pi, size=2)
        s = np.sin(2 * np.pi * freq * ux + ph[0]) * np.sin(2 * np.pi * freq * uy + ph[1])
        tex = 0.5 + 0.5 * np.tanh(4.0 * s)
    elif family == "blobs":
        tex = np.zeros((size, size), dtype=np.float32)
        for _ in range(3):
            ang = rng.uniform(0.0, 2 * np.pi)
            freq = rng.uniform(1.0, 2.5)
            tex = tex + np.sin(
                2 * np.pi * freq * (ux * np.cos(ang) + uy * np.sin(ang)) + rng.uniform(0, 2 * np.pi)
            )
        tex = 0.5 + tex / 6.0
    elif family == "gradient":
        ang = rng.uniform(0.0, 2 * np.pi)
        ramp = ux * np.cos(ang) + uy * np.sin(ang)
        tex = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    elif family == "noise":
        # A fixed 32x32 grid, stretched to the frame: draws and layout do not depend on size.
        grid = rng.random((32, 32), dtype=np.float32)
        idx = (np.arange(size) * 32) // size
        tex = grid[idx[:, None], idx[None, :]]
    else:  # pragma: no cover - guarded by _STYLE
        raise AssertionError(family)
    return np.broadcast_to(tex, (size, size)).astype(np.float32)


def _translation(
    rng: np.random.Generator, direction: tuple[float, float], t: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) per frame on the torus; start is uniform so every frame is too."""
    x0, y0 = rng.uniform(0.0, size, size=2)
    travel = size * rng.uniform(0.42, 0.62)
    return x0 + direction[0] * travel * t, y0 + direction[1] * travel * t


def _object_alpha(
    rng: np.random.Generator, cls: EmbeddedClass, t: np.ndarray, size: int
) -> np.ndarray:
    """Coverage (T or 1, size, size) of the moving object; the only class-specific code."""
    scale = rng.uniform(0.85, 1.15)
    s = float(size)
    motion = cls.motion
    if cls.appearance in ("red_square", "green_disc", "magenta_triangle", "cyan_diamond"):
        if motion == "drift":
            ang = rng.uniform(0.0, 2 * np.pi)
            direction = (float(np.cos(ang)), float(np.sin(ang)))
        else:
            direction = {
                "right": (1.0, 0.0),
                "left": (-1.0, 0.0),
                "up": (0.0, -1.0),
                "down": (0.0, 1.0),
            }[motion]
        cx, cy = _translation(rng, direction, t, size)
        dx = _wrapped_offsets(cx, size)[:, None, :]  # (T, 1, W)
        dy = _wrapped_offsets(cy, size)[:, :, None]  # (T, H, 1)
        if cls.appearance == "red_square":
            half = 0.11 * s * scale
            ax = _alpha(np.abs(dx) - half)
            ay = _alpha(np.abs(dy) - half)
            return ay * ax
        if cls.appearance == "green_disc":
            return _alpha(np.sqrt(dx * dx + dy * dy) - 0.12 * s * scale)
        if cls.appearance == "cyan_diamond":
            # L1 ball; /sqrt(2) turns the L1 excess into a Euclidean edge distance.
            return _alpha((np.abs(dx) + np.abs(dy) - 0.15 * s * scale) * np.float32(0.7071))
        # Equilateral triangle with a random (static) orientation: max of three half-planes.
        rot = rng.uniform(0.0, 2 * np.pi)
        inradius = 0.07 * s * scale
        sdf = None
        for k in range(3):
            a = rot + 2 * np.pi * k / 3
            plane = dx * np.float32(np.cos(a)) + dy * np.float32(np.sin(a)) - inradius
            sdf = plane if sdf is None else np.maximum(sdf, plane)
        return _alpha(sdf)

    x = _pixel_centres(size)
    cx, cy = rng.uniform(0.32 * s, 0.68 * s, size=2)
    dx = (x - np.float32(cx))[None, None, :]
    dy = (x - np.float32(cy))[None, :, None]
    if cls.appearance == "blue_bar":
        sweep = np.deg2rad(rng.uniform(100.0, 150.0))
        sign = 1.0 if motion == "cw" else -1.0  # image y points down: +angle is clockwise
        theta = (rng.uniform(0.0, np.pi) + sign * sweep * t).astype(np.float32)
        c, sn = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        along = np.abs(dx * c + dy * sn) - 0.275 * s * scale
        across = np.abs(dy * c - dx * sn) - max(0.045 * s * scale, 1.5)
        return _alpha(np.maximum(along, across))
    if cls.appearance == "yellow_ring":
        r0 = 0.10 * s * scale
        radius = (r0 * (1.0 + rng.uniform(0.8, 1.3) * t)).astype(np.float32)[:, None, None]
        width = max(0.025 * s * scale, 1.2)
        return _alpha(np.abs(np.sqrt(dx * dx + dy * dy) - radius) - width)
    if cls.appearance == "orange_cross":
        arm, w = 0.15 * s * scale, max(0.045 * s * scale, 1.5)
        adx, ady = np.abs(dx), np.abs(dy)
        horizontal = np.maximum(adx - arm, ady - w)
        vertical = np.maximum(adx - w, ady - arm)
        return _alpha(np.minimum(horizontal, vertical))
    raise AssertionError(cls.appearance)  # pragma: no cover - every group is handled above


def render_video(
    class_index: int, seed: int, *, num_frames: int = SOURCE_FRAMES, size: int = DEFAULT_SIZE
) -> np.ndarray:
    """One video (num_frames, size, size, 3) uint8; pure in (class_index, seed, num_frames, size).

    The randomness is keyed by the class name, so the same seed gives independent videos for
    different classes. The geometry does not depend on ``num_frames``; only the noise does.
    """
    class_index = _as_int(class_index, "class_index")
    num_frames = _as_int(num_frames, "num_frames")
    size = _as_int(size, "size")
    seed = _as_int(seed, "seed")
    if not 0 <= class_index < NUM_CLASSES:
        raise ValueError(f"class_index must be in [0, {NUM_CLASSES}), got {class_index}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")

    cls = EMBEDDED_CLASSES[class_index]
    colour, family, tint = _STYLE[cls.appearance]
    # Scene draws come before any per-frame draw, so geometry is the same for every num_frames.
    rng = numpy_rng(seed, "embedded", cls.name)
    gain = rng.uniform(0.85, 1.15)
    bg_tint = np.asarray(tint) * gain + rng.normal(0.0, 0.03, size=3)
    contrast = rng.uniform(0.5, 0.9)
    tex = _background(rng, family, size)
    bg = bg_tint[None, None, :] * (1.0 + contrast * (tex[..., None] - 0.5))

    # Static distractor: same distribution for every class, so it carries no label.
    distractor = rng.random() < 0.5
    d_pos = rng.uniform(0.0, size, size=2)
    d_rad = size * rng.uniform(0.05, 0.10)
    d_col = rng.uniform(0.15, 0.85, size=3)
    if distractor:
        x = _pixel_centres(size)
        r2 = (x[None, :] - d_pos[0]) ** 2 + (x[:, None] - d_pos[1]) ** 2
        blob = np.exp(-r2 / (2.0 * d_rad * d_rad))[..., None]
        bg = bg + blob * (d_col - bg)

    obj_colour = np.clip(np.asarray(colour) * gain + rng.normal(0.0, 0.04, size=3), 0.0, 1.0)
    t = np.arange(num_frames, dtype=np.float64) / num_frames
    alpha = _object_alpha(rng, cls, t, size)

    bg255 = (bg * 255.0).astype(np.float32)
    diff255 = (obj_colour * 255.0).astype(np.float32) - bg255
    frames = alpha[..., None] * diff255
    frames += bg255
    if frames.shape[0] != num_frames:  # a still object: materialise the time axis
        frames = np.broadcast_to(frames, (num_frames, size, size, 3)).copy()

    # Per-frame draws: flicker and luma noise (uniform in +-6 grey levels).
    flicker = (1.0 + rng.normal(0.0, 0.02, size=num_frames)).astype(np.float32)
    frames *= flicker[:, None, None, None]
    noise = np.frombuffer(rng.bytes(num_frames * size * size), dtype=np.uint8)
    noise = noise.reshape(num_frames, size, size, 1).astype(np.float32)
    # The +0.5 that makes the final truncation round to nearest is folded into the offset.
    frames += noise * np.float32(12.0 / 255.0) - np.float32(5.5)
    np.clip(frames, 0.0, 255.0, out=frames)
    return frames.astype(np.uint8)
