"""The synthetic generator: deterministic, masks exactly where wrinkles were drawn, distractors not in them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.image_io import read_binary_mask, read_rgb
from data.sources import folder_samples
from data.synthetic import render_face, synthetic_is_current, synthetic_manifest, write_synthetic_dataset


def test_same_seed_same_face_other_index_other_face():
    a, b = render_face(7, 96, 80, index=3), render_face(7, 96, 80, index=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.wrinkle_mask, b.wrinkle_mask)
    c = render_face(7, 96, 80, index=4)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (96, 80, 3) and a.image.dtype == np.uint8
    assert a.wrinkle_mask.shape == a.skin_mask.shape == a.distractor_mask.shape == (96, 80)


@pytest.mark.parametrize("index", range(6))
def test_wrinkle_mask_is_exactly_what_was_drawn(index):
    with_wrinkles = render_face(11, 160, 160, index)
    without = render_face(11, 160, 160, index, wrinkles=False)
    mask = with_wrinkles.wrinkle_mask
    diff = with_wrinkles.image.astype(int) - without.image.astype(int)
    changed = np.abs(diff).max(axis=2) > 0
    # Outside the mask (beyond the camera blur's reach) nothing changed at all.
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not (changed & ~near).any()
    if mask.any():
        # Inside the mask the skin got darker, nearly everywhere.
        darker = diff.mean(axis=2) < 0
        assert darker[mask].mean() > 0.95
        # Wrinkles lie on skin only and are 1-4 px wide: only where lines cross does a 5x5 square fit.
        assert not (mask & ~with_wrinkles.skin_mask).any()
        assert cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).sum() < 0.05 * mask.sum()


def test_distractors_are_drawn_and_not_in_the_mask():
    found = 0
    for index in range(6):
        face = render_face(5, 160, 160, index)
        clean = render_face(5, 160, 160, index, distractors=False)
        assert not (face.distractor_mask & face.wrinkle_mask).any()
        if face.distractor_mask.any():
            found += 1
            diff = np.abs(face.image.astype(int) - clean.image.astype(int)).max(axis=2)
            assert (diff[face.distractor_mask] > 0).mean() > 0.9  # really drawn
            # and thin dark lines: darker than the same pixels without them
            darkening = clean.image.astype(int).mean(2) - face.image.astype(int).mean(2)
            assert np.median(darkening[face.distractor_mask]) > 5
    assert found >= 5  # nearly every face has stray hairs or background lines


def test_faces_have_anatomical_wrinkles_and_some_have_none():
    counts = [render_face(3, 128, 128, i).wrinkle_mask.sum() for i in range(40)]
    assert sum(c == 0 for c in counts) >= 1  # young faces exist
    assert sum(c > 0 for c in counts) >= 30
    face = next(render_face(3, 128, 128, i) for i in range(40) if counts[i] > 0)
    ys, _xs = np.nonzero(face.wrinkle_mask)
    skin_ys = np.nonzero(face.skin_mask)[0]
    assert skin_ys.min() <= ys.min() and ys.max() <= skin_ys.max()


def test_written_layout_is_what_the_folder_loader_reads(tmp_path):
    root = write_synthetic_dataset(tmp_path / "synth", n_images=4, height=64, width=64, seed=9)
    assert synthetic_is_current(root, synthetic_manifest(4, 64, 64, 9))
    samples = folder_samples(root)
    assert [s.id for s in samples] == [f"synth_{i:05d}" for i in range(4)]
    face = render_face(9, 64, 64, 2)
    assert np.array_equal(read_rgb(samples[2].image), face.image)
    assert np.array_equal(read_binary_mask(samples[2].mask), face.wrinkle_mask)
    assert np.array_equal(read_binary_mask(samples[2].face_mask), face.skin_mask)
    # Same parameters: kept as is. Other parameters: regenerated.
    before = samples[0].image.stat().st_mtime_ns
    write_synthetic_dataset(root, n_images=4, height=64, width=64, seed=9)
    assert samples[0].image.stat().st_mtime_ns == before
    write_synthetic_dataset(root, n_images=3, height=64, width=64, seed=10)
    assert len(folder_samples(root)) == 3 and not np.array_equal(read_rgb(samples[0].image), face.image)
