"""The demo's work (app.py), apart from its Gradio page: photos in, predict.py's figures and pictures out.

The photos go through `PhotoSegmenter`, predict.py's own path (face crop, skin, model, mapping back),
once; a new threshold only re-thresholds the stored probabilities. The rows are predict.py's
summary.csv rows, so the numbers the page shows are the ones predict.py writes for the same photo.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.image_io import write_png
from engine.cli import input_problem, write_summary
from engine.segment_photos import SUMMARY_COLUMNS, PhotoSegmenter, Prepared, segment_result
from face.regions import REGIONS

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["file", "status", "wrinkle_percent_of_skin"] + [f"{name}_percent" for name in REGIONS] + ["message"]
TABLE_HEADERS = ["photo", "status", "wrinkles, % of skin"] + [f"{name}, %" for name in REGIONS] + ["message"]


@dataclass
class PhotoResult:
    """One uploaded file: its summary row and, when it has a face, the face and its wrinkle probabilities."""

    row: dict
    item: Prepared | None = None
    prob: np.ndarray | None = None


@dataclass
class Rendering:
    """What the page shows at one threshold."""

    overlays: list[tuple[np.ndarray, str]]  # (overlay on the photo, caption)
    table: list[list[str]]  # TABLE_COLUMNS, as summary.csv writes them
    downloads: list[str]  # mask PNGs and summary.csv
    message: str  # one line per file without a result, or ""


def analyse_photos(segmenter: PhotoSegmenter, paths: list[Path]) -> list[PhotoResult]:
    """Each file's face and probabilities (the model runs once per photo), or its reason for having none.
    Uploads that share a name (IMG_0001.jpg from two folders) get their outputs named IMG_0001, IMG_0001_2..."""
    results = []
    taken: set[str] = set()
    for path in paths:
        row = {"file": path.name}
        problem = input_problem(path)
        if problem is not None:
            row.update(status=problem[0], message=problem[1])
            results.append(PhotoResult(row))
            continue
        name, copy = path.stem, 1
        while name in taken:
            copy += 1
            name = f"{path.stem}_{copy}"
        taken.add(name)
        item = segmenter.prepare(path, name, row)
        if item is None:
            results.append(PhotoResult(row))
            continue
        (prob,) = segmenter.probabilities([item])
        results.append(PhotoResult(row, item, prob))
    return results


def render(results: list[PhotoResult], threshold: float, output_dir: Path | None = None) -> Rendering:
    """Overlays, the table and the downloads (masks and summary.csv, written to a new folder in
    `output_dir`, by default the system's temporary folder) of `results` at `threshold`."""
    folder = Path(tempfile.mkdtemp(prefix="wrinkle-demo-", dir=output_dir))
    overlays, rows, downloads, problems = [], [], [], []
    for result in results:
        row = {**result.row, "threshold": round(threshold, 4)}
        if result.item is not None:
            images, figures = segment_result(result.item, result.prob, threshold, save_probs=False)
            row.update(figures)
            overlays.append((images[f"overlays/{result.item.name}.png"], f"{row['file']}: {row['wrinkle_percent_of_skin']} % of skin"))
            mask_path = folder / "masks" / f"{result.item.name}.png"
            write_png(mask_path, images[f"masks/{result.item.name}.png"])
            downloads.append(str(mask_path))
        else:
            problems.append(f"{row['file']}: {row['message']} ({row['status']})")
        rows.append(row)
    write_summary(folder / "summary.csv", rows, SUMMARY_COLUMNS)
    downloads.append(str(folder / "summary.csv"))
    table = [[str(row.get(column, "")) for column in TABLE_COLUMNS] for row in rows]
    return Rendering(overlays, table, downloads, "\n".join(problems))
