"""Train / validation / test splits by sample id, merged across sources, refusing anything that leaks.

Rules:
- an id (an FFHQ id, a file stem) is one face: when several sources hold it, the source listed first
  in `data.sources` provides it and the other copies are left out (counted per source);
- "random": ids are ranked by a seeded hash, so an id's split never depends on file order or on which
  other ids exist; "files": test (and optionally val) ids come from text files, one id a line;
- a split that would leak is an error: an id in two id files, or the same image file under two ids in
  different splits.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data.sources import DataError, Sample

if TYPE_CHECKING:
    from config import SplitConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _rank_key(sample_id: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{sample_id}".encode()).hexdigest()


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_test = max(round(test_fraction * n), 1 if test_fraction > 0 and n >= 3 else 0)
    n_val = max(round(val_fraction * n), 1 if val_fraction > 0 and n >= 3 else 0)
    if n_test + n_val >= n:
        raise DataError(f"{n} ids are too few for val_fraction {val_fraction} and test_fraction {test_fraction}")
    return n_val, n_test


def split_ids(ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Assign ids to train, val and test by seeded hash rank (at least one each where a fraction is > 0)."""
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        raise ValueError("split_ids: duplicate ids would land in more than one split")
    n_val, n_test = _counts(len(unique), val_fraction, test_fraction)
    ranked = sorted(unique, key=lambda i: _rank_key(i, seed))
    return {"test": sorted(ranked[:n_test]), "val": sorted(ranked[n_test : n_test + n_val]), "train": sorted(ranked[n_test + n_val :])}


def read_id_file(path: str | Path) -> list[str]:
    """Ids from a text file, one a line (blank lines and # comments ignored; FFHQ ids zero-padded to 5)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"id file not found: {path}")
    ids = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line.zfill(5) if line.isdigit() else line)
    return ids


@dataclass
class SplitReport:
    """What merging and splitting did, for logs and `data.check`."""

    per_source: dict[str, int] = field(default_factory=dict)  # samples each source offered
    overlaps: dict[str, int] = field(default_factory=dict)  # "a & b": ids both sources hold
    dropped: dict[str, list[str]] = field(default_factory=dict)  # source: ids provided by an earlier source
    excluded_from_train: dict[str, int] = field(default_factory=dict)  # source: dropped ids that are val/test ids
    listed_but_missing: dict[str, list[str]] = field(default_factory=dict)  # split: ids in a file with no sample
    sizes: dict[str, int] = field(default_factory=dict)


def merge_sources(sources: list[tuple[str, list[Sample]]], report: SplitReport) -> list[Sample]:
    """One sample per id; the first source listed wins, later copies are dropped and counted."""
    owner: dict[str, str] = {}
    merged: list[Sample] = []
    ids_by_source = {}
    for name, samples in sources:
        report.per_source[name] = len(samples)
        seen = set()
        for sample in samples:
            if sample.id in seen:
                raise DataError(f"{name}: id {sample.id} appears twice ({sample.image})")
            seen.add(sample.id)
            if sample.id in owner:
                report.dropped.setdefault(name, []).append(sample.id)
                continue
            owner[sample.id] = name
            merged.append(sample)
        ids_by_source[name] = seen
    names = list(ids_by_source)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = len(ids_by_source[a] & ids_by_source[b])
            if common:
                report.overlaps[f"{a} & {b}"] = common
                log.info("%d ids are in both %s and %s: %s provides them", common, a, b, a)
    return merged


def check_no_leak(splits: dict[str, list[Sample]]) -> None:
    """Refuse splits that share an id or an image file."""
    where: dict[str, str] = {}
    files: dict[Path, tuple[str, str]] = {}
    for split, samples in splits.items():
        for sample in samples:
            if sample.id in where and where[sample.id] != split:
                raise DataError(f"leak: id {sample.id} is in both {where[sample.id]} and {split}")
            where[sample.id] = split
            image = sample.image.resolve()
            if image in files and files[image][1] != split:
                raise DataError(f"leak: {image} is {files[image][0]} in {files[image][1]} and {sample.id} in {split}")
            files[image] = (sample.id, split)


def assign_splits(sources: list[tuple[str, list[Sample]]], cfg: "SplitConfig") -> tuple[dict[str, list[Sample]], SplitReport]:
    """Merge the sources by id, split them per `cfg`, check for leaks; returns the splits and a report."""
    report = SplitReport()
    samples = merge_sources(sources, report)
    ids = [s.id for s in samples]
    if cfg.method == "random":
        assignment = split_ids(ids, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    else:
        test = read_id_file(cfg.test_ids_file)
        val = read_id_file(cfg.val_ids_file) if cfg.val_ids_file else []
        both = sorted(set(test) & set(val))
        if both:
            raise DataError(f"leak: {len(both)} ids are in both {cfg.val_ids_file} and {cfg.test_ids_file}: {', '.join(both[:10])}")
        present = set(ids)
        for split, listed in (("test", test), ("val", val)):
            missing = sorted(set(listed) - present)
            if missing:
                report.listed_but_missing[split] = missing
                log.warning("%d %s ids listed in a file have no sample in any source: %s", len(missing), split, ", ".join(missing[:10]))
        test_ids = sorted(set(test) & present)
        rest = sorted(present - set(test_ids))
        if cfg.val_ids_file:
            val_ids = sorted(set(val) & present)
        else:
            n_val, _ = _counts(len(rest), cfg.val_fraction, 0.0)
            val_ids = sorted(sorted(rest, key=lambda i: _rank_key(i, cfg.seed))[:n_val])
        assignment = {"test": test_ids, "val": val_ids, "train": sorted(set(rest) - set(val_ids))}
    split_of = {i: split for split, members in assignment.items() for i in members}
    for name, dropped in report.dropped.items():
        held_out = sum(split_of.get(i) in ("val", "test") for i in dropped)
        report.excluded_from_train[name] = held_out
        log.info("%s: %d ids left out because an earlier source provides them (%d of them are val/test ids)", name, len(dropped), held_out)
    by_id = {s.id: s for s in samples}
    splits = {split: [by_id[i] for i in assignment[split]] for split in SPLITS}
    check_no_leak(splits)
    report.sizes = {split: len(members) for split, members in splits.items()}
    return splits, report
