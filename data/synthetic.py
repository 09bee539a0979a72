"""Procedural face-like images with exact wrinkle masks: the built-in data that needs no download.

Each face has a skin tone, low-frequency texture, directional lighting and a cast shadow, pores and
freckles, eyes, brows, lips and hair, and two kinds of thin dark lines:

- wrinkles (forehead lines, frown lines, crow's feet, under-eye lines, nasolabial folds), 1-4 px wide,
  with varying depth, contrast and curvature; these, and only these, are in the wrinkle mask;
- distractors that are NOT wrinkles: stray hair strands over the skin, thin lines in the background.

Rendering is deterministic for a (seed, index) pair, so a data set is reproducible image by image and
can be generated in parallel. `write_synthetic_dataset` writes the same on-disk layout the folder
loader reads (images/, masks/, face_masks/), so the quickstart exercises the real loading path.
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data.image_io import write_png
from engine.errors import WrinkleError
from engine.fileio import write_text_atomic

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the rendering changes, so cached data sets are regenerated
MANIFEST_NAME = "synthetic.json"
SUBFOLDERS = ("images", "masks", "face_masks")
MIN_SIDE = 32  # smaller faces have no room for eyes, brows and wrinkles

# Skin tones (RGB, 0..1) from light to deep, perturbed per face.
SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.74, 0.60],
        [0.86, 0.66, 0.52],
        [0.76, 0.57, 0.42],
        [0.62, 0.44, 0.31],
        [0.47, 0.32, 0.22],
    ],
    dtype=np.float32,
)
HAIR_COLORS = np.array(
    [[0.08, 0.06, 0.05], [0.22, 0.14, 0.08], [0.40, 0.28, 0.16], [0.55, 0.42, 0.25], [0.30, 0.30, 0.30]],
    dtype=np.float32,
)


@dataclass
class SyntheticFace:
    """One rendered face: RGB image and boolean masks of the same height and width."""

    image: np.ndarray  # uint8, H x W x 3, RGB
    wrinkle_mask: np.ndarray  # bool, exactly the wrinkle pixels drawn (and visible)
    skin_mask: np.ndarray  # bool, face skin: face oval minus hair, eyes, brows and lips
    distractor_mask: np.ndarray  # bool, thin dark lines that are not wrinkles (hair strands, background)


@dataclass
class _Face:
    """Face geometry in pixels: centre and radii of the face oval."""

    cx: float
    cy: float
    rx: float
    ry: float

    def point(self, u: float, v: float) -> tuple[float, float]:
        """Pixel coordinates of face coordinates (u, v), both -1..1 across the oval."""
        return self.cx + u * self.rx, self.cy + v * self.ry


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise smoothed at `scale` pixels."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(scale, 0.5))
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _curve(rng: np.random.Generator, face: _Face, p0, p1, bow: float, wobble: float, n: int = 24):
    """Points of a smooth curve from p0 to p1 (face coords), bowed by `bow` and wobbling randomly."""
    t = np.linspace(0.0, 1.0, n)
    (u0, v0), (u1, v1) = p0, p1
    du, dv = u1 - u0, v1 - v0
    length = np.hypot(du, dv) + 1e-9
    nu, nv = -dv / length, du / length  # unit normal
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.5)
    offset = bow * np.sin(np.pi * t) + wobble * np.sin(2 * np.pi * freq * t + phase) * np.sin(np.pi * t)
    u = u0 + du * t + nu * offset
    v = v0 + dv * t + nv * offset
    x, y = face.point(u, v)
    return np.stack([x, y], axis=1)


def _draw_centerline(canvas: np.ndarray, points: np.ndarray, values: np.ndarray) -> None:
    """Draw a 1-px polyline whose segments carry per-point intensities (max-blended)."""
    pts = np.round(points).astype(np.int32)
    for i in range(len(pts) - 1):
        segment = np.zeros_like(canvas)
        cv2.line(segment, tuple(int(c) for c in pts[i]), tuple(int(c) for c in pts[i + 1]), float(values[i]), 1, cv2.LINE_8)
        np.maximum(canvas, segment, out=canvas)


def _thicken(centerline: np.ndarray, width: int) -> np.ndarray:
    """Grey dilation of a centreline by a width x width square: a line exactly `width` px wide."""
    if width <= 1:
        return centerline
    return cv2.dilate(centerline, np.ones((width, width), np.uint8))


def _wrinkle_templates(rng: np.random.Generator, age: float) -> list[tuple[tuple, tuple, float, float]]:
    """Anatomical wrinkle paths (start, end, bow, wobble) in face coordinates for a face of `age` 0..1."""
    if age <= 0:
        return []
    paths = []
    n_forehead = rng.binomial(5, age)
    for i in range(n_forehead):
        v = -0.36 - 0.065 * i - rng.uniform(0, 0.015)
        half = rng.uniform(0.18, 0.42)
        shift = rng.uniform(-0.1, 0.1)
        paths.append(((shift - half, v), (shift + half, v + rng.uniform(-0.02, 0.02)), rng.uniform(-0.05, 0.0), 0.012))
    for _ in range(rng.binomial(2, age * 0.6)):  # frown lines between the brows
        u = rng.choice([-1, 1]) * rng.uniform(0.03, 0.08)
        paths.append(((u, -0.34), (u + rng.uniform(-0.02, 0.02), -0.20), rng.uniform(-0.02, 0.02), 0.006))
    for side in (-1, 1):
        for _ in range(rng.binomial(3, age)):  # crow's feet, radiating from the outer eye corner
            angle = rng.uniform(-0.6, 0.6)
            start = (side * 0.60, -0.12 + 0.05 * angle)
            length = rng.uniform(0.10, 0.20)
            end = (start[0] + side * length * np.cos(angle), start[1] + length * np.sin(angle))
            paths.append((start, end, rng.uniform(-0.015, 0.015), 0.005))
        for _ in range(rng.binomial(2, age * 0.8)):  # under-eye lines
            v = rng.uniform(-0.01, 0.05)
            paths.append(((side * 0.20, v), (side * rng.uniform(0.45, 0.58), v - 0.02), side * 0.025, 0.006))
        if rng.random() < 0.3 + 0.7 * age:  # nasolabial fold
            paths.append(((side * 0.17, 0.20), (side * rng.uniform(0.30, 0.38), 0.56), -side * rng.uniform(0.03, 0.07), 0.01))
    return paths


def render_face(seed: int, height: int, width: int, index: int = 0, wrinkles: bool = True, distractors: bool = True) -> SyntheticFace:
    """Render one synthetic face; the same (seed, index, height, width) always gives the same face.

    Face, wrinkles, distractors and camera noise draw from separate random streams, so turning
    `wrinkles` or `distractors` off renders the very same face without them (tests use this to check
    that the masks cover exactly what was drawn).
    """
    if height < MIN_SIDE or width < MIN_SIDE:
        raise SyntheticError(f"synthetic faces need at least {MIN_SIDE}x{MIN_SIDE} pixels, got {height}x{width}")
    rng, wrinkle_rng, distractor_rng, camera_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(4))
    H, W = height, width
    s = min(H, W)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)

    face = _Face(
        cx=W / 2 + rng.uniform(-0.03, 0.03) * s,
        cy=H * 0.53 + rng.uniform(-0.02, 0.02) * s,
        rx=s * rng.uniform(0.30, 0.35),
        ry=s * rng.uniform(0.40, 0.45),
    )
    u = (xx - face.cx) / face.rx
    v = (yy - face.cy) / face.ry
    radius = np.sqrt(u**2 + v**2)

    # Background: a two-colour gradient with a little blotchy texture.
    c0, c1 = rng.uniform(0.15, 0.85, 3), rng.uniform(0.15, 0.85, 3)
    t = ((xx / W) * rng.uniform(-1, 1) + (yy / H) * rng.uniform(-1, 1))[..., None]
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    image = (c0 * (1 - t) + c1 * t).astype(np.float32)
    image += 0.04 * _smooth_noise(rng, (H, W), s / 12)[..., None]

    # Skin: base tone, low-frequency blotches, fine texture.
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, 3).astype(np.float32)
    skin = np.broadcast_to(tone, (H, W, 3)).copy()
    skin *= 1 + 0.05 * _smooth_noise(rng, (H, W), s / 16)[..., None]
    skin *= 1 + 0.015 * _smooth_noise(rng, (H, W), 0.8)[..., None]
    # Neck below the face, in shadow.
    neck = (np.abs(xx - face.cx) < 0.55 * face.rx) & (yy > face.cy)
    face_oval = radius <= 1.0
    body = face_oval | neck
    edge = np.clip((1.0 - radius) * face.rx / 1.5 + 0.5, 0, 1)  # ~1.5 px anti-aliased oval edge
    alpha = np.where(neck & ~face_oval, 1.0, edge)[..., None]
    neck_shade = np.where(neck & ~face_oval, 0.7, 1.0)[..., None]
    image = image * (1 - alpha) + skin * neck_shade * alpha

    # Facial features (drawn over the skin, excluded from the skin mask).
    features = np.zeros((H, W), np.uint8)
    eye_mask = np.zeros((H, W), np.uint8)
    brow_mask = np.zeros((H, W), np.uint8)
    lip_mask = np.zeros((H, W), np.uint8)
    for side in (-1, 1):
        ex, ey = face.point(side * 0.36, -0.12)
        axes = (max(int(0.16 * face.rx), 2), max(int(0.065 * face.ry), 1))
        cv2.ellipse(eye_mask, (int(ex), int(ey)), axes, 0, 0, 360, 1, -1)
        brow = _curve(rng, face, (side * 0.12, -0.27), (side * 0.60, -0.26), -0.05, 0.0)
        cv2.polylines(brow_mask, [np.round(brow).astype(np.int32)], False, 1, max(int(0.045 * face.ry), 2))
    mx, my = face.point(0.0, 0.52)
    cv2.ellipse(lip_mask, (int(mx), int(my)), (max(int(0.28 * face.rx), 2), max(int(0.075 * face.ry), 1)), 0, 0, 360, 1, -1)
    sclera = np.array([0.92, 0.90, 0.86], np.float32)
    iris = rng.uniform(0.05, 0.45, 3).astype(np.float32)
    image[eye_mask > 0] = sclera
    for side in (-1, 1):
        ex, ey = face.point(side * 0.36, -0.12)
        cv2.circle(image, (int(ex), int(ey)), max(int(0.06 * face.ry), 1), iris.tolist(), -1)
    hair_color = HAIR_COLORS[rng.integers(len(HAIR_COLORS))]
    image[brow_mask > 0] = image[brow_mask > 0] * 0.3 + hair_color * 0.7
    lip_color = np.clip(tone * np.array([1.0, 0.62, 0.62]) * 0.9, 0, 1)
    image[lip_mask > 0] = lip_color
    for side in (-1, 1):  # nostrils: small dark shapes that belong to the nose (skin)
        nx, ny = face.point(side * 0.09, 0.30)
        cv2.ellipse(
            image, (int(nx), int(ny)), (max(int(0.05 * face.rx), 1), max(int(0.025 * face.ry), 1)), 0, 0, 360, (tone * 0.45).tolist(), -1
        )
    features = (eye_mask | brow_mask | lip_mask).astype(bool)

    # Hair: a cap over the top of the head with a wavy hairline.
    hairline = -0.62 + 0.05 * np.sin(u * rng.uniform(2, 5) + rng.uniform(0, 6)) + 0.25 * u**2
    hair = ((v < hairline) & (radius < 1.15)) | ((radius > 0.95) & (radius < 1.12) & (v < 0.1))
    hair_tex = hair_color * (1 + 0.25 * _smooth_noise(rng, (H, W), 1.0)[..., None])
    image = np.where(hair[..., None], hair_tex, image)

    skin_mask = body & face_oval & ~hair & ~features

    # Wrinkles: exact binary mask of what is drawn, depth varying along each line.
    age = wrinkle_rng.beta(2.0, 1.6) if wrinkle_rng.random() > 0.1 else 0.0  # one face in ten has no wrinkles
    depth = np.zeros((H, W), np.float32)
    for p0, p1, bow, wobble in _wrinkle_templates(wrinkle_rng, age) if wrinkles else []:
        points = _curve(wrinkle_rng, face, p0, p1, bow + wrinkle_rng.uniform(-0.01, 0.01), wobble)
        strength = wrinkle_rng.uniform(0.18, 0.45) * (0.6 + 0.4 * age)
        taper = np.sin(np.linspace(0.15, np.pi - 0.15, len(points))) ** 0.5
        centerline = np.zeros((H, W), np.float32)
        _draw_centerline(centerline, points, strength * (0.5 + 0.5 * taper))
        width = int(wrinkle_rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1]))
        np.maximum(depth, _thicken(centerline, width), out=depth)
    depth[~skin_mask] = 0.0

    # Distractors: stray hair strands across the skin, thin lines in the background.
    strands = np.zeros((H, W), np.float32)
    for _ in range(distractor_rng.integers(1, 7) if distractors else 0):
        su = distractor_rng.uniform(-0.6, 0.6)
        start = (su, hairline[int(np.clip(face.cy - 0.6 * face.ry, 0, H - 1)), int(np.clip(face.point(su, 0)[0], 0, W - 1))] - 0.02)
        end = (su + distractor_rng.uniform(-0.5, 0.5), start[1] + distractor_rng.uniform(0.3, 0.9))
        _draw_centerline(
            strands, _curve(distractor_rng, face, start, end, distractor_rng.uniform(-0.15, 0.15), 0.02, n=32), np.full(32, 1.0)
        )
    strands = _thicken(strands, int(distractor_rng.choice([1, 2], p=[0.7, 0.3])))
    background_lines = np.zeros((H, W), np.float32)
    for _ in range(distractor_rng.integers(0, 4) if distractors else 0):
        p0 = (distractor_rng.uniform(-1.6, 1.6), distractor_rng.uniform(-1.2, 1.2))
        p1 = (p0[0] + distractor_rng.uniform(-0.8, 0.8), p0[1] + distractor_rng.uniform(-0.8, 0.8))
        _draw_centerline(background_lines, _curve(distractor_rng, face, p0, p1, distractor_rng.uniform(-0.2, 0.2), 0.02), np.full(24, 1.0))
    background_lines[body | hair] = 0.0
    distractor_mask = (strands > 0) | (background_lines > 0)

    # Skin microstructure: pores (1 px, faint) and freckles (small brown spots).
    pores = (rng.random((H, W)) < 0.02) & skin_mask
    image[pores] *= rng.uniform(0.90, 0.96)
    for _ in range(int(rng.integers(0, 50) * (s / 256) ** 2)):
        fu, fv = rng.uniform(-0.6, 0.6), rng.uniform(-0.05, 0.45)
        fx, fy = face.point(fu, fv)
        cv2.circle(image, (int(fx), int(fy)), int(rng.integers(1, 3)), (tone * rng.uniform(0.7, 0.85) * [1.0, 0.9, 0.8]).tolist(), -1)

    # Wrinkle grooves darken the skin, a little more in red-poor channels (shadowed folds look warm).
    groove = np.array([0.85, 1.0, 1.05], np.float32)
    image *= 1.0 - depth[..., None] * groove
    # Strands are opaque hair over everything; background lines are dark ink.
    strand_alpha = np.clip(strands, 0, 1)[..., None] * distractor_rng.uniform(0.75, 0.95)
    image = image * (1 - strand_alpha) + hair_color * strand_alpha
    image[background_lines > 0] *= 0.35

    # Lighting: a directional gradient over the face and a soft cast shadow on one side.
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.08, 0.25) * (np.cos(angle) * u + np.sin(angle) * v) / 1.4
    light *= 1.0 - 0.18 * np.clip(radius, 0, 1) ** 4
    shadow_side = rng.choice([-1, 1])
    shadow = 1.0 - rng.uniform(0.0, 0.3) / (1 + np.exp(-(shadow_side * u - rng.uniform(0.2, 0.6)) * 8))
    image *= (light * np.where(body, shadow, 1.0))[..., None]

    # Camera: slight blur, sensor noise, 8 bits.
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.5)
    image += camera_rng.normal(0, 0.008, image.shape).astype(np.float32)
    image_u8 = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)

    wrinkle_mask = (depth > 0) & (strands <= 0)  # a hair over a wrinkle hides it
    return SyntheticFace(image_u8, wrinkle_mask, skin_mask, distractor_mask & ~wrinkle_mask)


def _render_and_write(args: tuple[Path, str, int, int, int, int]) -> str:
    root, stem, seed, index, height, width = args
    sample = render_face(seed, height, width, index)
    write_png(root / "images" / f"{stem}.png", sample.image)
    write_png(root / "masks" / f"{stem}.png", sample.wrinkle_mask.astype(np.uint8) * 255)
    write_png(root / "face_masks" / f"{stem}.png", sample.skin_mask.astype(np.uint8) * 255)
    return stem


def synthetic_manifest(n_images: int, height: int, width: int, seed: int) -> dict:
    """The parameters that fully determine a synthetic data set."""
    return {"generator_version": GENERATOR_VERSION, "n_images": n_images, "height": height, "width": width, "seed": seed}


def synthetic_is_current(root: Path, manifest: dict) -> bool:
    """True when `root` already holds the complete data set described by `manifest`."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()) == manifest
    except (OSError, json.JSONDecodeError):
        return False


class SyntheticError(WrinkleError):
    """Synthetic faces that cannot be written where or as asked."""


def foreign_files(root: Path) -> list[str]:
    """Files in `root` that a synthetic data set does not hold (its stale faces are regenerated, anything
    else must never be deleted or replaced): sorted relative paths."""
    if not root.is_dir():
        return []
    ours = re.compile(r"(images|masks|face_masks)/synth_\d{5}\.png")
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if (path.is_dir() and relative in SUBFOLDERS) or relative == MANIFEST_NAME or path.name.startswith("."):
            continue
        if not ours.fullmatch(relative):
            found.append(relative)
    return found


def write_synthetic_dataset(root: str | Path, n_images: int, height: int, width: int, seed: int, workers: int = 0) -> Path:
    """Write images/, masks/ and face_masks/ PNGs for `n_images` faces; the manifest is written last.

    Files are named `synth_NNNNN.png`. A data set already complete with the same parameters is kept.
    """
    root = Path(root)
    manifest = synthetic_manifest(n_images, height, width, seed)
    if synthetic_is_current(root, manifest):
        return root
    if n_images < 1 or height < MIN_SIDE or width < MIN_SIDE:
        raise SyntheticError(f"synthetic faces: need n >= 1 and at least {MIN_SIDE}x{MIN_SIDE} pixels, got n={n_images}, {width}x{height}")
    foreign = foreign_files(root)
    if foreign:
        raise SyntheticError(
            f"{root}: holds files that are not synthetic faces (e.g. {foreign[0]}); "
            "synthetic data is (re)generated only into a new folder or one it wrote itself"
        )
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # an interrupted run must not look complete
    for sub in SUBFOLDERS:
        (root / sub).mkdir(parents=True, exist_ok=True)
        for stale in (root / sub).glob("synth_*.png"):
            stale.unlink()
    jobs = [(root, f"synth_{i:05d}", seed, i, height, width) for i in range(n_images)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_render_and_write, jobs, chunksize=8))
    else:
        for job in jobs:
            _render_and_write(job)
    write_text_atomic(root / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %d synthetic faces (%dx%d, seed %d) to %s", n_images, width, height, seed, root)
    return root


def main(argv: list[str] | None = None) -> int:
    """Write synthetic faces: `--config FILE` generates that config's synthetic sources at its image size;
    `--output DIR` writes a stand-alone set (e.g. demo faces for predict.py)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m data.synthetic", description=main.__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--config", help="a training config: generate each of its synthetic sources")
    target.add_argument("--output", help="folder to write images/, masks/, face_masks/ into (new, or one this command wrote)")
    parser.add_argument("--n", type=int, default=16, help="number of faces")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.height < MIN_SIDE or args.width < MIN_SIDE:
        parser.error(f"--height and --width must be at least {MIN_SIDE}, got {args.height}x{args.width}")
    if args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.config:
        from config import load_config

        cfg = load_config(args.config)
        for src in cfg.data.sources:
            if src.kind == "synthetic":
                write_synthetic_dataset(src.root, src.n_images, cfg.data.image_size, cfg.data.image_size, src.seed, args.workers)
                print(Path(src.root).resolve())
        return 0
    write_synthetic_dataset(args.output, args.n, args.height, args.width, args.seed, args.workers)
    print(Path(args.output).resolve())
    return 0


if __name__ == "__main__":
    from engine.cli import run_cli

    raise SystemExit(run_cli(main))
