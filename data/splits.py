"""Train / validation / test splits by sample id, reproducible and independent of file order."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def _rank_key(sample_id: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{sample_id}".encode()).hexdigest()


def split_ids(ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Assign each id to train, val or test.

    Ids are ranked by a seeded hash: the first `round(test_fraction * n)` go to test, the next
    `round(val_fraction * n)` to val, the rest to train (at least one each where a fraction is > 0
    and there are enough ids). The same ids and seed always give the same split.
    """
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        raise ValueError("split_ids: duplicate ids would land in more than one split")
    n = len(unique)
    n_test = max(round(test_fraction * n), 1 if test_fraction > 0 and n >= 3 else 0)
    n_val = max(round(val_fraction * n), 1 if val_fraction > 0 and n >= 3 else 0)
    if n_test + n_val >= n:
        raise ValueError(f"split_ids: {n} ids are too few for val {val_fraction} and test {test_fraction}")
    ranked = sorted(unique, key=lambda i: _rank_key(i, seed))
    return {
        "test": sorted(ranked[:n_test]),
        "val": sorted(ranked[n_test : n_test + n_val]),
        "train": sorted(ranked[n_test + n_val :]),
    }
