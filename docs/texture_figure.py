"""The figure of data/texture.py's maps on real faces: a row per face, the face, its texture map and, where
one exists, its manual wrinkle mask (vanijan).

    python docs/texture_figure.py --output docs/texture_maps.png [--shared ../shared/data]

The faces are FFHQ images from the project's real test data (../shared/data/ffhq-faces, see its README):
00000 and 00001 from images512/, 00018 from images1024/ (scaled to 512), which has a vanijan annotation,
read as training reads it (data.sources.vanijan_samples, data.decode.load_sample at 512 px: the 1024 px
crop placed into the frame, then scaled with any-coverage so thin lines stay). Each map is texture_map at
512 px with the whole image as skin (so hair and background show too); it is drawn with values 0..64 as
black..white (brighter clipped), since most skin lies under 10. Tiles are 224 px. The faces are
CC BY-NC-SA: generate the figure locally, do not commit it. A few numbers that describe 00018's map are
printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FACES = [("images512", "00000"), ("images512", "00001"), ("images1024", "00018")]
SIZE = 512  # the resolution of the maps
TILE = 224  # the side of each picture in the figure (with 3 x 3 of them the PNG stays near 500 kB)
DISPLAY_MAX = 64  # map values drawn white (and above)
HEADER = 28  # pixels above the tiles for the column titles
GAP = 4  # pixels between tiles
COLUMNS = ["face", f"texture map (0-{DISPLAY_MAX}+)", "manual mask (vanijan)"]


def label(tile: np.ndarray, text: str, where: tuple[int, int] = (6, 18), scale: float = 0.5) -> np.ndarray:
    """`text` written on a copy of an RGB tile, white with a black outline so it reads on any picture."""
    import cv2

    out = tile.copy()
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(out, text, where, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
    return out


def face_row(shared: Path, folder: str, face_id: str) -> tuple[list[np.ndarray], dict[str, float]]:
    """The row's three RGB tiles and, for a face with a manual mask, the numbers describing its map."""
    from data.decode import load_sample
    from data.image_io import read_rgb, resize_mask, resize_rgb
    from data.sources import vanijan_samples
    from data.texture import texture_map

    images = shared / "ffhq-faces" / folder
    manual = {s.id: s for s in vanijan_samples(shared / "vanijan", images)}
    if face_id in manual:
        face, mask, annotated = load_sample(manual[face_id], SIZE)  # annotated: the crop that was labelled
    else:
        face, mask, annotated = resize_rgb(read_rgb(images / f"{face_id}.png"), SIZE, SIZE), None, None
    texture = texture_map(face)  # the whole image as skin
    shown = np.clip(texture.astype(np.float32) * (255.0 / DISPLAY_MAX), 0, 255).astype(np.uint8)
    tiles = [
        label(resize_rgb(face, TILE, TILE), f"{face_id} ({folder})"),
        resize_rgb(np.dstack([shown] * 3), TILE, TILE),
    ]
    numbers: dict[str, float] = {}
    if mask is None:
        tiles.append(label(np.full((TILE, TILE, 3), 40, np.uint8), "no manual mask", (TILE // 2 - 58, TILE // 2)))
    else:
        picture = np.zeros((TILE, TILE, 3), np.uint8)
        picture[resize_mask(annotated, TILE, TILE, thin=False)] = 60  # the labelled region, dark grey
        picture[resize_mask(mask, TILE, TILE)] = 255  # any-coverage: a 1 px line stays visible
        tiles.append(picture)
        median = float(np.median(texture))
        numbers = {
            "map mean (whole image)": float(texture.mean()),
            "map 95th percentile (whole image)": float(np.percentile(texture, 95)),
            "map median (whole image)": median,
            "map mean in the labelled crop, off wrinkles": float(texture[annotated & ~mask].mean()),
            "map mean on manual wrinkle pixels": float(texture[mask].mean()),
            "share of manual wrinkle pixels above the image's median": float((texture[mask] > median).mean()),
            "share of labelled-crop pixels above the image's median": float((texture[annotated] > median).mean()),
        }
    return tiles, numbers


def figure(rows: list[list[np.ndarray]]) -> np.ndarray:
    """The tiles in a grid on white, with the column titles above."""
    height = HEADER + len(rows) * (TILE + GAP)
    width = len(COLUMNS) * (TILE + GAP) - GAP
    canvas = np.full((height, width, 3), 255, np.uint8)
    for column, title in enumerate(COLUMNS):
        x = column * (TILE + GAP)
        header = np.zeros((HEADER, TILE, 3), np.uint8)
        canvas[:HEADER, x : x + TILE] = label(header, title, (6, 19))
        for row, tiles in enumerate(rows):
            y = HEADER + row * (TILE + GAP)
            canvas[y : y + TILE, x : x + TILE] = tiles[column]
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the PNG to write (e.g. docs/texture_maps.png; do not commit it)")
    parser.add_argument(
        "--shared", default=str(PROJECT_ROOT.parent / "shared" / "data"), help="the real test data (default ../shared/data)"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PROJECT_ROOT))
    import cv2

    from engine.fileio import write_bytes_atomic

    shared = Path(args.shared)
    missing = [
        shared / "ffhq-faces" / folder / f"{i}.png" for folder, i in FACES if not (shared / "ffhq-faces" / folder / f"{i}.png").is_file()
    ]
    if missing or not (shared / "vanijan" / "wrinkles").is_dir():
        print(f"error: real faces not found under {shared} (e.g. {missing[0] if missing else shared / 'vanijan'})", file=sys.stderr)
        return 1
    logging.getLogger("data.sources").setLevel(logging.ERROR)  # "masks without an image": only a few faces are here
    rows = []
    for folder, face_id in FACES:
        tiles, numbers = face_row(shared, folder, face_id)
        rows.append(tiles)
        for name, value in numbers.items():
            print(f"{face_id} {name}: {value:.4g}")
    # Smallest PNG OpenCV writes (its default, run-length coding, is about a third larger here).
    options = [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_DEFAULT]
    encoded = cv2.imencode(".png", cv2.cvtColor(figure(rows), cv2.COLOR_RGB2BGR), options)[1]
    write_bytes_atomic(args.output, encoded.tobytes())
    print(f"{args.output}: {Path(args.output).stat().st_size / 1000:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
