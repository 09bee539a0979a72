"""`python -m data.check --config FILE`: what the configured data really holds, before any GPU hour.

Per source and per split: images, matched pairs, wrinkle pixel fraction, empty masks, unreadable
files and size mismatches; ids shared between sources and the ids left out of training because of
that. Written to stdout as text and to `--output` (default data_check.json) as JSON. Exit code 1 when
a problem would corrupt training: a leaking or empty split, a source whose masks are all empty, or a
mask that is mostly "wrinkle" (an inverted mask).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data.decode import load_sample
from data.image_io import ImageReadError
from data.sources import DataError, Sample, configured_sources
from data.splits import SPLITS, assign_splits
from engine.errors import OutputError
from engine.fileio import write_text_atomic

log = logging.getLogger(__name__)

INVERTED_FRACTION = 0.5  # a mask with more wrinkle than background is almost surely inverted


def inspect_sample(sample: Sample) -> dict:
    """Decode one sample at its own size and describe it (or the error that stops it)."""
    try:
        image, mask, skin = load_sample(sample, None)
    except (ImageReadError, OSError) as err:
        kind = "size_mismatch" if "aspect ratio" in str(err) or "crop is" in str(err) else "unreadable"
        return {"id": sample.id, "problem": kind, "message": str(err)}
    return {
        "id": sample.id,
        "problem": None,
        "height": image.shape[0],
        "width": image.shape[1],
        "wrinkle_fraction": float(mask.mean()),
        "wrinkle_fraction_of_skin": float(mask[skin].mean()) if skin.any() else 0.0,
        "empty_mask": not mask.any(),
    }


def _summarize(rows: list[dict]) -> dict:
    good = [r for r in rows if r["problem"] is None]
    fractions = [r["wrinkle_fraction"] for r in good]
    return {
        "images": len(rows),
        "matched_pairs": len(good),
        "unreadable": [f"{r['id']}: {r['message']}" for r in rows if r["problem"] == "unreadable"],
        "size_mismatches": [f"{r['id']}: {r['message']}" for r in rows if r["problem"] == "size_mismatch"],
        "empty_masks": sum(r["empty_mask"] for r in good),
        "inverted_masks": [r["id"] for r in good if r["wrinkle_fraction"] > INVERTED_FRACTION],
        "wrinkle_fraction_mean": float(np.mean(fractions)) if fractions else None,
        "wrinkle_fraction_of_skin_mean": float(np.mean([r["wrinkle_fraction_of_skin"] for r in good])) if good else None,
        "sizes": sorted({f"{r['width']}x{r['height']}" for r in good}),
    }


def check_data(cfg, workers: int = 4) -> tuple[dict, list[str]]:
    """The report of the configured data, and the list of problems that would corrupt training."""
    sources = configured_sources(cfg.data)
    problems: list[str] = []
    try:
        splits, split_report = assign_splits(sources, cfg.data.split)
    except DataError as err:
        problems.append(str(err))
        splits, split_report = None, None

    report: dict = {"sources": {}, "splits": {}}
    rows_by_id: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for name, samples in sources:
            rows = list(pool.map(inspect_sample, samples))
            summary = _summarize(rows)
            report["sources"][name] = summary
            for sample, row in zip(samples, rows):
                rows_by_id.setdefault(sample.id, row)  # the first source provides the id, as in training
            if summary["matched_pairs"] and summary["empty_masks"] == summary["matched_pairs"]:
                problems.append(f"{name}: every mask is empty (wrong mask folder or threshold?)")
            if summary["inverted_masks"]:
                problems.append(
                    f"{name}: {len(summary['inverted_masks'])} masks are mostly wrinkle (inverted?): {', '.join(summary['inverted_masks'][:5])}"
                )
    if split_report is not None:
        report["overlaps"] = split_report.overlaps
        report["left_out_as_duplicates"] = {k: len(v) for k, v in split_report.dropped.items()}
        report["duplicates_that_are_val_or_test_ids"] = split_report.excluded_from_train
        report["listed_but_missing"] = split_report.listed_but_missing
        for split in SPLITS:
            members = splits[split]
            summary = _summarize([rows_by_id[s.id] for s in members])
            summary["per_source"] = {name: sum(s.source == name for s in members) for name, _ in sources}
            report["splits"][split] = summary
        for split in ("train", "val"):
            if report["splits"][split]["matched_pairs"] == 0:
                problems.append(f"the {split} split has no usable image")
    report["problems"] = problems
    return report, problems


def _print(report: dict) -> None:
    for section in ("sources", "splits"):
        for name, s in report[section].items():
            mean = s["wrinkle_fraction_mean"]
            print(
                f"{section[:-1]} {name}: {s['images']} images, {s['matched_pairs']} usable, "
                f"wrinkle {'-' if mean is None else f'{100 * mean:.2f} %'} of pixels, {s['empty_masks']} empty masks, "
                f"{len(s['unreadable'])} unreadable, {len(s['size_mismatches'])} size mismatches"
            )
            for line in (s["unreadable"] + s["size_mismatches"])[:5]:
                print(f"    {line}")
    for pair, n in report.get("overlaps", {}).items():
        print(f"overlap {pair}: {n} ids (the first source provides them)")
    for name, n in report.get("duplicates_that_are_val_or_test_ids", {}).items():
        print(f"{name}: {n} of its ids are val/test ids provided by another source: left out of training")
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}")


def write_report(path: Path, report: dict) -> None:
    """Write the JSON report atomically; an existing file is replaced only when it is such a report."""
    if path.is_dir():
        raise OutputError(f"--output {path}: is a folder; give a file name such as {path / 'data_check.json'}")
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
            ours = isinstance(previous, dict) and {"sources", "splits", "problems"} <= previous.keys()
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise OutputError(f"--output {path}: exists and is not a data.check report; refusing to replace it (choose another name)")
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument(
        "--output",
        default="data_check.json",
        help="JSON report (default: data_check.json; an existing report is replaced, never another file)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    from config import load_config

    cfg = load_config(args.config, args.overrides)
    report, problems = check_data(cfg)
    write_report(Path(args.output), report)
    _print(report)
    print(f"report: {args.output}")
    return 1 if problems else 0


if __name__ == "__main__":
    from engine.cli import run_cli

    raise SystemExit(run_cli(main))
