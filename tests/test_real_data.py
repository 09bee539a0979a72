"""The published vanijan masks on the real FFHQ faces in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from data.decode import load_sample, read_cropped_mask
from data.image_io import read_rgb
from data.sources import vanijan_samples
from data.splits import read_id_file

# Wrinkle pixels in the 1024 frame, read as convert("L") > 0, and crop limits, from the published files.
KNOWN = {
    "00002": (2392, (182, 917, 178, 782)),
    "00015": (2203, (178, 994, 218, 833)),  # the palette BMP with an inverted palette
    "00018": (5701, (194, 972, 212, 808)),
    "00043": (1204, (154, 968, 131, 746)),
    "00215": (3303, (180, 973, 155, 786)),
}


@pytest.fixture(scope="module")
def vanijan(shared_data):
    return {s.id: s for s in vanijan_samples(shared_data / "vanijan", shared_data / "ffhq-faces")}


def test_every_face_with_a_mask_is_found(vanijan):
    assert sorted(vanijan) == sorted(KNOWN)


@pytest.mark.parametrize("sample_id", sorted(KNOWN))
def test_crops_binarize_and_land_in_the_frame(vanijan, sample_id):
    count, (min_h, max_h, min_w, max_w) = KNOWN[sample_id]
    sample = vanijan[sample_id]
    assert sample.mask_crop == (min_h, max_h, min_w, max_w)
    mask, region = read_cropped_mask(sample.mask, sample.mask_crop)
    assert mask.shape == (1024, 1024) and mask.sum() == count
    assert region.sum() == (max_h - min_h) * (max_w - min_w)
    assert not (mask & ~region).any()
    assert 0.0005 < mask.mean() < 0.01  # about 0.1 % of the full frame, as published


def test_full_resolution_samples_keep_every_pixel(vanijan):
    image, mask, skin = load_sample(vanijan["00002"], None)
    assert image.shape == (1024, 1024, 3) and mask.sum() == 2392
    assert skin[182:917, 178:782].all() and skin.sum() == 735 * 604  # only the annotated crop counts


@pytest.mark.parametrize("sample_id", ["00015", "00215"])
def test_256px_faces_get_their_masks_downscaled_4x(vanijan, sample_id, shared_data):
    image, mask, skin = load_sample(vanijan[sample_id], None)
    assert image.shape == (256, 256, 3)  # 00015 is RGBA on disk
    assert read_rgb(shared_data / "ffhq-faces" / "images256" / f"{sample_id}.png").shape == (256, 256, 3)
    full, _ = read_cropped_mask(vanijan[sample_id].mask, vanijan[sample_id].mask_crop)
    # every 4x4 block holding a wrinkle pixel is a wrinkle pixel at 256: lines survive, nothing invented
    blocks = full.reshape(256, 4, 256, 4).any(axis=(1, 3))
    assert np.array_equal(mask, blocks)


def test_downscaling_1024_to_512_keeps_thin_lines(vanijan):
    _, mask512, _ = load_sample(vanijan["00018"], 512)
    full, _ = read_cropped_mask(vanijan["00018"].mask, vanijan["00018"].mask_crop)
    assert np.array_equal(mask512, full.reshape(512, 2, 512, 2).any(axis=(1, 3)))


def test_moon_test_ids_file(shared_data):
    ids = read_id_file(shared_data / "ffhq-wrinkle" / "test_file_lists.txt")
    assert len(ids) == 100 and len(set(ids)) == 100 and all(len(i) == 5 and i.isdigit() for i in ids)
