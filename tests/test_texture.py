"""The texture map against numbers worked out step by step: intensity, Gaussian blur, dark floor, formula,
rounding; its edge cases and resolution scaling; and the texture channel of model.input=rgb_texture through
the dataset (cache, augmentation) and prediction. (Its [-1, 1] scaling is unet/inputs.py's, in test_inputs.py.)"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from data.texture import blur_parameters, intensity, texture_map, with_texture

BT709 = np.array([0.2126, 0.7152, 0.0722])


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """The 2-D Gaussian written out: exp(-x^2 / 2 sigma^2) over the taps, normalised, outer product."""
    taps = np.arange(size) - size // 2
    line = np.exp(-(taps**2) / (2 * sigma**2))
    line /= line.sum()
    return np.outer(line, line)


def _texture_by_hand(image: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """The float response (before rounding) in float64 numpy: no cv2 blur, no code from data.texture."""
    level = image.astype(np.float64) @ BT709
    kernel = _gaussian_kernel(size, sigma)
    half = size // 2
    padded = np.pad(level, half, mode="reflect")  # numpy's "reflect" is OpenCV's BORDER_REFLECT_101
    height, width = level.shape
    blurred = np.array([[(padded[y : y + size, x : x + size] * kernel).sum() for x in range(width)] for y in range(height)])
    floored = np.minimum(level, blurred)
    return (1.0 - floored / (1.0 + blurred)) * 255.0


def _flat(value: tuple[int, int, int] | int, height: int = 6, width: int = 6) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def test_blur_parameters_scale_with_resolution():
    assert blur_parameters(1024) == (21, 5.0)
    assert blur_parameters(512) == (11, 2.5)  # 10.5: the nearest odd integer is 11
    assert blur_parameters(64) == (3, 0.3125)  # 1.3125 rounds to 1, raised to the minimum 3
    assert blur_parameters(2048) == (41, 10.0)  # 42 is a tie between 41 and 43: the smaller, 4 sigma + 1
    assert blur_parameters(1000) == (21, 5.0 * 1000 / 1024)
    assert blur_parameters(5, reference_size=25) == (5, 1.0)  # the small image's blur below
    with pytest.raises(ValueError, match="positive"):
        blur_parameters(0)


def test_small_image_matches_hand_computation():
    # One dark pixel (intensity 0.2126*240 + 0.7152*60 + 0.0722*150 = 104.64) next to the border of a flat
    # 150 background, so the reflected border, the weights, the floor and the rounding all show.
    image = _flat(150, 5, 5)
    image[1, 1] = (240, 60, 150)
    assert np.allclose(_gaussian_kernel(5, 1.0), cv2.getGaussianKernel(5, 1.0) @ cv2.getGaussianKernel(5, 1.0).T)
    response = _texture_by_hand(image, 5, 1.0)  # the blur for side 5 at reference 25
    expected = np.rint(response).astype(np.uint8)
    assert expected[1, 1] == 66 and expected[4, 4] == 2  # the dark pixel, and 255/151 = 1.69 far from it
    np.testing.assert_array_equal(texture_map(image, reference_size=25), expected)


def test_non_square_image_blurs_by_its_longer_side():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (4, 30, 3), dtype=np.uint8)
    response = _texture_by_hand(image, *blur_parameters(30, reference_size=30))  # 21 x 21, sigma 5
    clear = np.abs(response % 1 - 0.5) > 1e-3  # float32 vs float64 may split a value at .5 either way
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(texture_map(image, reference_size=30)[clear], np.rint(response[clear]).astype(np.uint8))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (200, 1),  # 255/201 = 1.27
        (100, 3),  # 255/101 = 2.52: rounded, not truncated to 2
        (255, 1),  # 255/256 = 0.996
        (0, 255),  # a black image: 1 - 0/(1+0) = 1
    ],
)
def test_flat_image_gives_255_over_one_plus_intensity(value: int, expected: int):
    # Flat: I = I_G, so T = (1 - I/(1+I)) * 255 = 255/(1+I).
    assert round(255 / (1 + value)) == expected
    np.testing.assert_array_equal(texture_map(_flat(value)), np.full((6, 6), expected, np.uint8))


def test_dark_floor_keeps_a_bright_pixel_bounded():
    # A white pixel on black: unfloored, 1 - 255/(1+I_G) is far below 0 and clips to 0; floored to I_G it
    # gives 255/(1+I_G), where I_G is 255 times the kernel's centre weight (the black elsewhere adds 0).
    image = _flat(0, 9, 9)
    image[4, 4] = 255
    centre_blur = 255 * _gaussian_kernel(5, 1.0)[2, 2]  # side 9 at reference 45: 5 x 5, sigma 1
    expected = np.full((9, 9), 255, np.uint8)  # black pixels: I = 0 whatever the blur
    expected[4, 4] = round(255 / (1 + centre_blur))
    assert expected[4, 4] == 6
    np.testing.assert_array_equal(texture_map(image, reference_size=45), expected)


def test_output_is_uint8_in_range():
    rng = np.random.default_rng(1)
    texture = texture_map(rng.integers(0, 256, (32, 24, 3), dtype=np.uint8))
    assert texture.dtype == np.uint8 and texture.shape == (32, 24)
    assert texture.min() >= 1  # the floor keeps every response above 0: 255/(1+I_G) at the least


def test_skin_zeroes_outside_and_leaves_inside_unchanged():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    skin = np.zeros((32, 32), bool)
    skin[8:24, 4:20] = True
    masked, whole = texture_map(image, skin, reference_size=64), texture_map(image, reference_size=64)  # 11 x 11
    assert not masked[~skin].any()
    # Inside, the map is the unmasked one: the blur still sees the pixels outside the skin.
    np.testing.assert_array_equal(masked[skin], whole[skin])


def test_intensity_is_bt709():
    green = intensity(_flat((0, 255, 0)))
    assert green.dtype == np.float32
    np.testing.assert_array_equal(green, np.float32(0.7152) * np.float32(255))
    np.testing.assert_allclose(intensity(_flat((255, 0, 0))), 0.2126 * 255, rtol=1e-6)
    # Through the map: 255/(1 + 182.376) = 1.39 -> 1 (BT.601's 149.685 would give 1.69 -> 2).
    np.testing.assert_array_equal(texture_map(_flat((0, 255, 0))), 1)


def test_channel_order_is_rgb():
    # A pure red dot (I = 54.2) is brighter than a pure blue one (I = 18.4), so it responds less.
    red_dot, blue_dot = _flat(128, 9, 9), _flat(128, 9, 9)
    red_dot[4, 4], blue_dot[4, 4] = (255, 0, 0), (0, 0, 255)
    red, blue = texture_map(red_dot, reference_size=45), texture_map(blue_dot, reference_size=45)
    assert red[4, 4] < blue[4, 4]
    assert not np.array_equal(texture_map(red_dot[..., ::-1].copy(), reference_size=45), red)


@pytest.mark.parametrize(
    ("image", "skin", "match"),
    [
        (np.zeros((6, 6, 3), np.float32), None, "uint8"),
        (np.zeros((6, 6), np.uint8), None, "H x W x 3"),
        (np.zeros((6, 6, 4), np.uint8), None, "H x W x 3"),
        (np.zeros((0, 6, 3), np.uint8), None, "non-empty"),
        (np.zeros((6, 6, 3), np.uint8), np.ones((6, 5), bool), "skin mask is"),
        (np.zeros((6, 6, 3), np.uint8), np.ones((6, 6), np.uint8), "bool"),
    ],
)
def test_programming_errors_raise_value_error(image: np.ndarray, skin: np.ndarray | None, match: str):
    with pytest.raises(ValueError, match=match):
        texture_map(image, skin)


def _face_folder(root, size: int = 128) -> list:
    """One face-like image (a dark 1 px line on a textured patch), its wrinkle mask and a skin mask covering
    part of it. 128 px: the scaled blur (3 x 3, sigma 0.625) still makes the line stand out."""
    from data.image_io import write_png
    from data.sources import folder_samples

    rng = np.random.default_rng(3)
    image = rng.integers(120, 220, (size, size, 3), dtype=np.uint8)
    image[60, 10:100] = 40
    mask = np.zeros((size, size), np.uint8)
    mask[60, 10:100] = 255
    skin = np.zeros((size, size), np.uint8)
    skin[8:120, 4:110] = 255
    write_png(root / "images" / "a.png", image)
    write_png(root / "masks" / "a.png", mask)
    write_png(root / "face_masks" / "a.png", skin)
    return folder_samples(root)


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_dataset_texture_channel_is_the_map_of_the_decoded_face(tmp_path, cache):
    from data.dataset import WrinkleDataset
    from data.decode import load_sample

    samples = _face_folder(tmp_path)
    item = WrinkleDataset(samples, 128, cache=cache, cache_dir=tmp_path / "cache", texture=True)[0]
    image, _, skin = load_sample(samples[0], 128)
    assert item["image"].shape == (4, 128, 128)
    expected = texture_map(image, skin)
    assert expected[skin].max() > 100 and not expected[~skin].any()  # a map worth comparing
    np.testing.assert_array_equal(item["image"][3].numpy(), expected)  # computed from the unmasked image
    np.testing.assert_array_equal(item["image"][:3].permute(1, 2, 0).numpy(), image * skin[..., None])
    rgb = WrinkleDataset(samples, 128, cache=cache, cache_dir=tmp_path / "cache")[0]
    assert rgb["image"].shape == (3, 128, 128) and torch.equal(rgb["image"], item["image"][:3])
    if cache == "disk":  # RGB and RGB + texture entries live side by side under different names
        assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2


def _augmented(tmp_path, *overrides: str) -> tuple[np.ndarray, np.ndarray, dict]:
    from config import load_config
    from data.dataset import WrinkleDataset
    from data.transforms import build_train_transform

    off = ["hflip_p=0", "affine_p=0", "clahe_p=0", "blur_p=0", "noise_p=0"]
    cfg = load_config(None, [f"data.augment.{o}" for o in off] + [f"data.augment.{o}" for o in overrides])
    samples = _face_folder(tmp_path)
    plain = WrinkleDataset(samples, 128, texture=True)[0]["image"].numpy()
    dataset = WrinkleDataset(samples, 128, transform=build_train_transform(cfg.data.augment, seed=0), texture=True)
    return plain, dataset[0]["image"].numpy(), dataset[0]


def test_geometric_augmentation_moves_the_texture_with_the_face(tmp_path):
    plain, flipped, item = _augmented(tmp_path, "hflip_p=1")
    np.testing.assert_array_equal(flipped, plain[:, :, ::-1])  # RGB and texture flipped alike
    np.testing.assert_array_equal(item["mask"][0].numpy().astype(bool), (flipped[3] > 0) & item["mask"][0].numpy().astype(bool))


def test_affine_augmentation_warps_the_texture_exactly_as_the_rgb():
    """Rotation and scaling resample the texture map as they resample the image (bilinear), not as the
    wrinkle mask (nearest): a 4th channel equal to the red one stays equal to it."""
    from config import load_config
    from data.transforms import build_train_transform

    off = [f"data.augment.{o}=0" for o in ("hflip_p", "clahe_p", "blur_p", "noise_p")]
    cfg = load_config(None, [*off, "data.augment.affine_p=1", "data.augment.rotate_limit=30"])
    augment = build_train_transform(cfg.data.augment, seed=3)
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (5, 5), 2)  # smooth: interpolation shows
    mask = (rng.random((64, 64)) < 0.1).astype(np.uint8)
    image, (moved_mask,) = augment(np.dstack([rgb, rgb[..., 0]]), [mask])
    assert not np.array_equal(image[..., 0], rgb[..., 0])  # it did move
    np.testing.assert_array_equal(image[..., 3], image[..., 0])
    assert set(np.unique(moved_mask)) <= {0, 1}  # masks stay nearest-neighbour


def test_photometric_augmentation_leaves_the_texture_alone(tmp_path):
    plain, noisy, _ = _augmented(tmp_path, "noise_p=1", "blur_p=1", "clahe_p=1")
    assert not np.array_equal(noisy[:3], plain[:3])
    np.testing.assert_array_equal(noisy[3], plain[3])


def test_prediction_input_matches_the_training_input(tmp_path):
    from data.dataset import WrinkleDataset
    from data.image_io import read_binary_mask, read_rgb
    from engine.segment_photos import model_input
    from face.crop import load_mask_crop

    samples = _face_folder(tmp_path)
    for size in (128, 96):  # the image's own size, and a resized one (the map is computed after resizing)
        crop = load_mask_crop(read_rgb(samples[0].image), read_binary_mask(samples[0].face_mask), size)
        for zero_non_skin in (True, False):
            trained = WrinkleDataset(samples, size, zero_non_skin=zero_non_skin, texture=True)[0]["image"].permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(model_input(crop, zero_non_skin, texture=True), trained)
        np.testing.assert_array_equal(model_input(crop, True, texture=False), trained[..., :3] * crop.skin[..., None])


def test_with_texture_stacks_the_map_as_a_fourth_channel():
    image = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    skin = np.zeros((10, 12), np.uint8)
    skin[2:8] = 1  # 0/1 masks (the dataset's) are taken as well as bool ones
    out = with_texture(image, skin)
    assert out.shape == (10, 12, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :3], image)
    np.testing.assert_array_equal(out[..., 3], texture_map(image, skin.astype(bool)))
