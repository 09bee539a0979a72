"""Train / validation / test splits by sample id, merged across sources, refusing anything that leaks.

Rules:
- an id (an FFHQ id, a file stem) is one face: when several sources hold it, the source listed first
  in `data.sources` provides it and the other copies are left out (counted per source); a `folder` or
  `synthetic` id is only a file name, so when such a source is involved the two image files must be
  byte-identical (the same face), else the merge is refused rather than dropping a face;
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
from engine.fileio import file_digest

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


FILE_NAME_KINDS = ("folder", "synthetic")  # sources whose ids are file names, not FFHQ ids


def _kind_and_key(name: str) -> tuple[str, str]:
    """("folder", "data.sources.1 (folder)") from a source name "1:folder" (as `configured_sources` names them)."""
    index, _, kind = name.rpartition(":")
    return kind, f"data.sources.{index} ({kind})" if index.isdigit() else name


def same_file_content(a: Path, b: Path) -> bool:
    """True when the two files hold the same bytes (sizes first, then SHA-256)."""
    if a.resolve() == b.resolve():
        return True
    if a.stat().st_size != b.stat().st_size:
        return False
    return file_digest(a, "sha256") == file_digest(b, "sha256")


def _differs(first: Sample, first_source: str, later: Sample, later_source: str) -> bool:
    """True when the shared id is only a file name (a folder or synthetic source) and the images differ."""
    if _kind_and_key(first_source)[0] not in FILE_NAME_KINDS and _kind_and_key(later_source)[0] not in FILE_NAME_KINDS:
        return False  # FFHQ ids: the same id is the same face
    return not same_file_content(first.image, later.image)


def _clash_error(first_source: str, later_source: str, clashes: list[tuple[Sample, Sample]]) -> DataError:
    """The error for ids that name different images in two sources, with what to do about it."""
    (kind_a, key_a), (kind_b, key_b) = _kind_and_key(first_source), _kind_and_key(later_source)
    a, b = clashes[0]
    if kind_a == kind_b == "synthetic":
        fix = (
            "two synthetic sources name their faces alike (synth_NNNNN): use one synthetic source with the "
            "total n_images, or copy one set into a folder source and rename its files"
        )
    else:
        fix = (
            "give the images distinct names (rename the image with its mask and face mask in one source), "
            "or, if they are the same face, remove it from one of the sources"
        )
    more = (
        f" (and {len(clashes) - 1} more: {', '.join(x.id for x, _ in clashes[1:6])}{' ...' if len(clashes) > 6 else ''})"
        if len(clashes) > 1
        else ""
    )
    return DataError(
        f"{key_a} and {key_b} share {len(clashes)} ids whose images differ, e.g. {a.id}: {a.image} and {b.image}{more}; "
        f"an id is one face, so {key_b}'s image would be dropped: {fix}"
    )


def merge_sources(sources: list[tuple[str, list[Sample]]], report: SplitReport) -> list[Sample]:
    """One sample per id; the first source listed wins, later copies are dropped and counted.

    Where a `folder` or `synthetic` source shares an id with another source, the two image files
    must hold the same bytes: otherwise they are two faces that happen to share a file name, and a
    DataError names both files (and both sources) instead of dropping one.
    """
    owner: dict[str, str] = {}
    first_sample: dict[str, Sample] = {}
    merged: list[Sample] = []
    ids_by_source = {}
    clashes: dict[tuple[str, str], list[tuple[Sample, Sample]]] = {}
    for name, samples in sources:
        report.per_source[name] = len(samples)
        seen = set()
        for sample in samples:
            if sample.id in seen:
                raise DataError(f"{name}: id {sample.id} appears twice ({sample.image})")
            seen.add(sample.id)
            if sample.id in owner:
                first = first_sample[sample.id]
                if _differs(first, owner[sample.id], sample, name):
                    clashes.setdefault((owner[sample.id], name), []).append((first, sample))
                report.dropped.setdefault(name, []).append(sample.id)
                continue
            owner[sample.id] = name
            first_sample[sample.id] = sample
            merged.append(sample)
        ids_by_source[name] = seen
    if clashes:
        (first_source, later_source), pairs = next(iter(clashes.items()))
        raise _clash_error(first_source, later_source, pairs)
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


def assign_splits(sources: list[tuple[str, list[Sample]]], cfg: SplitConfig) -> tuple[dict[str, list[Sample]], SplitReport]:
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
