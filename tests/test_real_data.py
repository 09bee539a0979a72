"""The published vanijan masks on the real FFHQ faces in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from data.decode import load_sample, read_cropped_mask
from data.image_io import read_rgb
from data.sources import vanijan_samples
from data.splits import read_id_file

# Wrinkle pixels in the 1024 frame, read as convert("L") > 0, crop limits, from the published files; and
# the side of the face in ffhq-faces/ the mask lines up with (the mask is downscaled 1024/side times).
KNOWN = {
    "00002": (2392, (182, 917, 178, 782), 512),
    "00015": (2203, (178, 994, 218, 833), 256),  # the palette BMP with an inverted palette; the PNG is RGBA
    "00018": (5701, (194, 972, 212, 808), 1024),
    "00215": (3303, (180, 973, 155, 786), 256),
    "00761": (2249, (176, 945, 230, 800), 1024),
    "01012": (3204, (179, 939, 228, 797), 1024),
}


@pytest.fixture(scope="module")
def vanijan(shared_data):
    return {s.id: s for s in vanijan_samples(shared_data / "vanijan", shared_data / "ffhq-faces")}


def test_every_face_with_a_mask_is_found(vanijan, shared_data):
    assert sorted(vanijan) == sorted(KNOWN)
    for sample_id, (_, _, side) in KNOWN.items():  # from the three size folders of ffhq-faces/
        assert vanijan[sample_id].image == shared_data / "ffhq-faces" / f"images{side}" / f"{sample_id}.png"


@pytest.mark.parametrize("sample_id", sorted(KNOWN))
def test_crops_binarize_and_land_in_the_frame(vanijan, sample_id):
    count, (min_h, max_h, min_w, max_w), _ = KNOWN[sample_id]
    sample = vanijan[sample_id]
    assert sample.mask_crop == (min_h, max_h, min_w, max_w)
    mask, region = read_cropped_mask(sample.mask, sample.mask_crop)
    assert mask.shape == (1024, 1024) and mask.sum() == count
    assert region.sum() == (max_h - min_h) * (max_w - min_w)
    assert not (mask & ~region).any()
    assert 0.0005 < mask.mean() < 0.01  # about 0.1 % of the full frame, as published


@pytest.mark.parametrize("sample_id", ["00018", "00761", "01012"])
def test_full_resolution_samples_keep_every_pixel(vanijan, sample_id):
    count, (min_h, max_h, min_w, max_w), side = KNOWN[sample_id]
    assert side == 1024
    image, mask, skin = load_sample(vanijan[sample_id], None)
    assert image.shape == (1024, 1024, 3) and mask.sum() == count
    assert skin[min_h:max_h, min_w:max_w].all() and skin.sum() == (max_h - min_h) * (max_w - min_w)  # only the annotated crop counts


@pytest.mark.parametrize("sample_id", ["00002", "00015", "00215"])
def test_smaller_faces_get_their_masks_downscaled(vanijan, sample_id, shared_data):
    """00002 is at 512 px (mask downscaled 2x), 00015 and 00215 at 256 (4x)."""
    _, _, side = KNOWN[sample_id]
    image, mask, skin = load_sample(vanijan[sample_id], None)
    assert image.shape == (side, side, 3)  # 00015 is RGBA on disk
    assert read_rgb(vanijan[sample_id].image).shape == (side, side, 3)
    full, region = read_cropped_mask(vanijan[sample_id].mask, vanijan[sample_id].mask_crop)
    factor = 1024 // side
    # every block holding a wrinkle pixel is a wrinkle pixel at the face's size: lines survive, nothing invented
    blocks = full.reshape(side, factor, side, factor)
    assert np.array_equal(mask, blocks.any(axis=(1, 3)))
    # the annotated region: blocks at least half inside it
    assert np.array_equal(skin, region.reshape(side, factor, side, factor).mean(axis=(1, 3)) >= 0.5)
    assert not (mask & ~skin).any()


def test_downscaling_1024_to_512_keeps_thin_lines(vanijan):
    _, mask512, _ = load_sample(vanijan["00018"], 512)
    full, _ = read_cropped_mask(vanijan["00018"].mask, vanijan["00018"].mask_crop)
    assert np.array_equal(mask512, full.reshape(512, 2, 512, 2).any(axis=(1, 3)))


def line_darkness(image: np.ndarray, mask: np.ndarray) -> float:
    """How much darker than their surroundings (grey levels, Gaussian of 2 px) the mask's pixels are."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float((cv2.GaussianBlur(grey, (0, 0), 2.0) - grey)[mask].mean())


def test_masks_line_up_with_their_faces(vanijan, shared_data):
    """Wrinkles are darker than the skin around them: each face is darker under its own mask than
    under any other face's mask, and the FFHQ faces in ffhq-zoomed/ (0.8 zoom) do not line up."""
    from dataclasses import replace

    own = {}
    for sample_id, sample in vanijan.items():
        image, mask, _ = load_sample(sample, None)
        own[sample_id] = line_darkness(image, mask)
        others = {
            other: line_darkness(image, load_sample(replace(sample, mask=s.mask, mask_crop=s.mask_crop), None)[1])
            for other, s in vanijan.items()
            if other != sample_id
        }
        # Measured: own 1.42 (00002), 3.51 (00015), 2.29 (00018), 5.87 (00215), 1.60 (00761), 2.70 (01012);
        # the most any other mask gives: 1.06, -0.05, 0.29, 0.94, 0.55, 1.11.
        assert own[sample_id] > 1.0 and own[sample_id] > 1.2 * max(others.values()), f"{sample_id}: {own[sample_id]:.2f}, others {others}"
    for sample_id in ("00002", "00018"):  # measured 0.29 and 0.02
        zoomed = read_rgb(shared_data / "ffhq-zoomed" / f"{sample_id}.png")
        mask, _ = read_cropped_mask(vanijan[sample_id].mask, vanijan[sample_id].mask_crop)
        assert line_darkness(zoomed, mask) < 0.5 * own[sample_id], sample_id


def test_moon_test_ids_file(shared_data):
    ids = read_id_file(shared_data / "ffhq-wrinkle" / "test_file_lists.txt")
    assert len(ids) == 100 and len(set(ids)) == 100 and all(len(i) == 5 and i.isdigit() for i in ids)
