"""The texture map against numbers worked out step by step: intensity, Gaussian blur, dark floor, formula,
rounding; its edge cases, its resolution scaling and the model's [-1, 1] channel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.texture import blur_parameters, intensity, texture_channel, texture_map

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


def test_channel_scales_to_minus_one_one():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    channel = texture_channel(image)
    assert channel.dtype == np.float32
    np.testing.assert_allclose(channel, texture_map(image) / 255 * 2 - 1, atol=1e-6)
    np.testing.assert_array_equal(texture_channel(_flat(0)), 1.0)  # T = 255 everywhere
    skin = np.zeros((16, 16), bool)
    skin[:8] = True
    assert texture_channel(image, skin)[8:].min() == -1.0  # zero texture outside the skin is -1 ...


def test_channel_all_zero_map_stays_zero():
    # ... but a map with no skin at all stays 0: Moon et al. scale only when the array's max is > 1.
    channel = texture_channel(_flat(90), np.zeros((6, 6), bool))
    assert channel.dtype == np.float32
    np.testing.assert_array_equal(channel, 0.0)


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
