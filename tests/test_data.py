"""Loading, binarization, resizing, splits and the training/evaluation dataset split of duties."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from config import load_config
from data.dataset import WrinkleDataset, build_dataset, make_loader, split_samples
from data.decode import load_sample
from data.image_io import ImageReadError, read_binary_mask, read_rgb, resize_mask, write_png
from data.sources import DataError, Sample, ffhq_wrinkle_samples, folder_samples
from data.splits import split_ids
from data.transforms import build_train_transform


def _folder(tmp_path, n=4, size=32, mask_values=(0, 255)):
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(tmp_path / "images" / f"img{i}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[size // 2, 4:-4] = mask_values[1]
        cv2.imwrite(str(tmp_path / "masks" / f"img{i}.png"), mask) if (tmp_path / "masks").exists() else (
            (tmp_path / "masks").mkdir(),
            cv2.imwrite(str(tmp_path / "masks" / f"img{i}.png"), mask),
        )
        skin = np.zeros((size, size), np.uint8)
        skin[:, : size // 2 + 8] = 255
        write_png(tmp_path / "face_masks" / f"img{i}.png", skin)
    return tmp_path


def test_folder_layout_matches_by_stem_and_reports_missing_masks(tmp_path, caplog):
    root = _folder(tmp_path)
    write_png(root / "images" / "lonely.png", np.zeros((32, 32, 3), np.uint8))
    write_png(root / "masks" / "orphan.png", np.zeros((32, 32), np.uint8))
    with caplog.at_level(logging.WARNING):
        samples = folder_samples(root)
    assert [s.id for s in samples] == ["img0", "img1", "img2", "img3"]
    assert "lonely" in caplog.text and "orphan" in caplog.text
    with pytest.raises(DataError, match="no images/ folder"):
        folder_samples(tmp_path / "nowhere")


@pytest.mark.parametrize("values", [(0, 1), (0, 255), (2, 255)])
def test_masks_binarize_from_any_stored_convention(tmp_path, values):
    mask = np.full((8, 8), values[0], np.uint8)
    mask[3, 2:6] = values[1]
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    read = read_binary_mask(tmp_path / "m.png")
    assert read.sum() == 4 and read[3, 2:6].all()


def test_images_become_rgb(tmp_path):
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 2] = 200  # red in OpenCV's BGRA order
    rgba[..., 3] = 10
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert read_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((6, 6), 77, np.uint8))
    assert read_rgb(tmp_path / "gray.png").shape == (6, 6, 3)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((6, 6, 3), 65535, np.uint16))
    assert read_rgb(tmp_path / "deep.png").max() == 255
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="broken.png"):
        read_rgb(tmp_path / "broken.png")


def test_a_sideways_stored_phone_photo_reads_upright(tmp_path):
    from PIL import Image

    upright = np.zeros((60, 40, 3), np.uint8)
    upright[:20] = (255, 0, 0)  # red on top
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # as a phone writes it: turned left
    exif = stored.getexif()
    exif[0x0112] = 6  # EXIF orientation: turn 90 degrees clockwise to display
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = read_rgb(tmp_path / "phone.jpg")
    assert image.shape == (60, 40, 3)
    assert image[5, 20, 0] > 200 and image[50, 20, 0] < 50


def test_real_rgba_ffhq_image_reads_as_rgb(shared_data):
    image = read_rgb(shared_data / "ffhq-faces" / "images256" / "00015.png")
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8 and image.std() > 10


def test_downscaling_keeps_one_pixel_lines():
    mask = np.zeros((1024, 1024), bool)
    mask[301, 100:900] = True  # a 1-px line on an odd row
    mask[100:900, 555] = True
    small = resize_mask(mask, 512, 512)
    assert small[150, 60:440].all() and small[60:440, 277].all()
    assert small.sum() < 2 * 2 * 400  # kept, not smeared


def test_splits_are_disjoint_deterministic_and_order_free():
    ids = [f"{i:05d}" for i in range(100)]
    a = split_ids(ids, 0.1, 0.2, seed=3)
    b = split_ids(list(reversed(ids)), 0.1, 0.2, seed=3)
    assert a == b
    assert len(a["val"]) == 10 and len(a["test"]) == 20 and len(a["train"]) == 70
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)
    assert not (set(a["train"]) & set(a["test"])) and not (set(a["val"]) & set(a["test"]))
    assert split_ids(ids, 0.1, 0.2, seed=4) != a
    with pytest.raises(ValueError, match="duplicate"):
        split_ids(["a", "a", "b"], 0.1, 0.1, 0)


def test_train_is_augmented_and_dilated_evaluation_is_not(tmp_path):
    root = _folder(tmp_path, n=6, size=64)
    cfg = load_config(
        None,
        [
            "data.sources.0.kind=folder",
            f"data.sources.0.root={root}",
            "data.image_size=64",
            "data.train_mask_dilation=3",
            "data.split.val_fraction=0.2",
            "data.split.test_fraction=0.2",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    splits = split_samples(cfg)
    train, val = build_dataset(cfg, "train", splits["train"], training=True), build_dataset(cfg, "val", splits["val"], training=False)
    assert val.transform is None and val.mask_dilation == 0
    assert train.transform is not None and train.mask_dilation == 3
    item = val[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 64)
    assert item["mask"].shape == item["face_mask"].shape == (1, 64, 64)
    raw = load_sample(val.samples[0], 64)
    assert int(item["mask"].sum()) == int(raw[1].sum())  # the thin original mask
    assert (item["image"][:, ~torch.from_numpy(raw[2])] == 0).all()  # non-skin zeroed
    assert torch.equal(val[0]["image"], val[0]["image"])  # evaluation is deterministic
    train.transform = None
    assert int(train[0]["mask"].sum()) > 2 * int(load_sample(train.samples[0], 64)[1].sum())  # dilated


def test_unreadable_files_are_reported_and_skipped(tmp_path, caplog):
    root = _folder(tmp_path, n=3)
    (root / "images" / "img1.png").write_bytes(b"not a png at all")
    with caplog.at_level(logging.WARNING):
        dataset = WrinkleDataset(folder_samples(root), 32)
    assert len(dataset) == 2 and dataset.skipped == ["img1"] and "img1" in caplog.text


def test_workers_get_distinct_augmentation_streams(tmp_path):
    root = _folder(tmp_path, n=1, size=48)
    cfg = load_config(None, ["data.augment.affine_p=1.0", "data.augment.noise_p=1.0"])
    sample = folder_samples(root)[0]
    dataset = WrinkleDataset([sample] * 4, 48, transform=build_train_transform(cfg.data.augment, seed=0))
    batches = list(make_loader(dataset, batch_size=1, shuffle=False, num_workers=2, seed=0))
    images = [b["image"] for b in batches]
    assert not torch.equal(images[0], images[1])  # item 0 from worker 0, item 1 from worker 1


def test_ffhq_wrinkle_layout(tmp_path, caplog):
    root, images = tmp_path / "ffhq-wrinkle", tmp_path / "images1024x1024"
    for sample_id in ("00001", "01002"):
        thousand = f"{int(sample_id) // 1000 * 1000:05d}"
        write_png(images / thousand / f"{sample_id}.png", np.full((64, 64, 3), 120, np.uint8))
        mask = np.zeros((64, 64), np.uint8)
        mask[10, 5:50] = 1  # stored as 0/1
        cv2.imwrite(str((root / "manual_wrinkle_masks").joinpath(f"{sample_id}.png")), mask) if (
            root / "manual_wrinkle_masks"
        ).exists() else (
            (root / "manual_wrinkle_masks").mkdir(parents=True),
            cv2.imwrite(str(root / "manual_wrinkle_masks" / f"{sample_id}.png"), mask),
        )
        labels = np.zeros((32, 32), np.uint8)  # BiSeNet labels at half resolution
        labels[:, :8] = 1  # skin
        labels[:, 8:12] = 10  # nose
        labels[:, 12:16] = 4  # an eye
        (root / "face_parsed_labels").mkdir(exist_ok=True)
        np.save(root / "face_parsed_labels" / f"{sample_id}.npy", labels)
    (root / "manual_wrinkle_masks" / "00003.png").write_bytes((root / "manual_wrinkle_masks" / "00001.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        samples = ffhq_wrinkle_samples(root, images)
    assert [s.id for s in samples] == ["00001", "01002"] and "00003" in caplog.text
    _image, mask, skin = load_sample(samples[1], 64)
    assert mask.sum() == 45
    assert skin[:, :24].all() and not skin[:, 24:].any()  # skin + nose, upscaled 2x; the eye excluded
    only_skin = load_sample(Sample(**{**samples[1].__dict__, "skin_classes": (1,)}), 64)[2]
    assert only_skin[:, :16].all() and not only_skin[:, 16:].any()


def test_geometric_augmentation_moves_image_and_masks_together(tmp_path):
    image = np.full((96, 96, 3), 200, np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    mask[40:43, 10:86] = 1
    image[mask.astype(bool)] = 20  # the wrinkle is exactly the dark line
    write_png(tmp_path / "images" / "a.png", image)
    write_png(tmp_path / "masks" / "a.png", mask * 255)
    cfg = load_config(
        None,
        [
            "data.augment.affine_p=1.0",
            "data.augment.hflip_p=0.5",
            "data.augment.clahe_p=0",
            "data.augment.noise_p=0",
            "data.augment.blur_p=0",
        ],
    )
    dataset = WrinkleDataset(folder_samples(tmp_path), 96, transform=build_train_transform(cfg.data.augment, seed=1), zero_non_skin=False)
    for _ in range(5):
        item = dataset[0]
        gray = item["image"].float().mean(0)
        on_line = item["mask"][0].bool()
        assert on_line.any() and gray[on_line].mean() < 80  # mask pixels are still on the dark line
        assert (gray[~on_line & (gray > 0)] > 100).float().mean() > 0.95


def test_skin_masking_options(tmp_path):
    root = _folder(tmp_path, n=1, size=32)
    sample = folder_samples(root)[0]
    kept = WrinkleDataset([sample], 32, zero_non_skin=False)[0]
    zeroed = WrinkleDataset([sample], 32, zero_non_skin=True)[0]
    skin = zeroed["face_mask"][0].bool()
    assert (zeroed["image"][:, ~skin] == 0).all() and (kept["image"][:, ~skin] != 0).any()
    assert torch.equal(kept["image"][:, skin], zeroed["image"][:, skin])
    assert torch.equal(kept["face_mask"], zeroed["face_mask"])  # the skin mask travels with the sample either way


def test_augmentation_is_strict_and_patches_are_for_training_only(tmp_path):
    cfg = load_config(None, ["data.patch_size=32", f"data.cache_dir={tmp_path / 'cache'}"])
    assert build_train_transform(cfg.data.augment).strict
    root = _folder(tmp_path, n=6, size=64)
    cfg = load_config(
        None,
        [
            "data.sources.0.kind=folder",
            f"data.sources.0.root={root}",
            "data.image_size=64",
            "data.patch_size=32",
            "data.split.val_fraction=0.2",
            "data.split.test_fraction=0.2",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    splits = split_samples(cfg)
    assert build_dataset(cfg, "train", splits["train"], training=True)[0]["image"].shape == (3, 32, 32)
    assert build_dataset(cfg, "val", splits["val"], training=False)[0]["image"].shape == (3, 64, 64)


def _write_mask_variant(path, marked, kind):
    """`marked` (bool H x W) stored as a palette PNG, red on black RGB, a dark VOC-style palette colour or 16-bit grey."""
    from PIL import Image

    if kind in ("palette_red", "palette_voc"):
        image = Image.fromarray(marked.astype(np.uint8), "P")
        image.putpalette([0, 0, 0] + ([255, 0, 0] if kind == "palette_red" else [128, 0, 0]))
        image.save(path)
    elif kind == "red_on_black":
        rgb = np.zeros(marked.shape + (3,), np.uint8)
        rgb[marked] = (255, 0, 0)
        Image.fromarray(rgb).save(path)
    else:
        cv2.imwrite(str(path), marked.astype(np.uint16) * 65535)


@pytest.mark.parametrize("kind", ["palette_red", "palette_voc", "red_on_black", "grey16"])
def test_palette_and_coloured_masks_read_as_marked(tmp_path, kind):
    marked = np.zeros((16, 24), bool)
    marked[8, 3:20] = True
    _write_mask_variant(tmp_path / "m.png", marked, kind)
    assert np.array_equal(read_binary_mask(tmp_path / "m.png"), marked)  # luminance read pure red as 76: "empty"


def test_training_refuses_a_split_whose_masks_are_all_empty(tmp_path):
    from engine.trainer import Trainer

    root = _folder(tmp_path / "data", n=8, mask_values=(0, 0))
    overrides = [
        "data.sources.0.kind=folder",
        f"data.sources.0.root={root}",
        "data.image_size=32",
        "data.num_workers=0",
        "data.split.val_fraction=0.25",
        "data.split.test_fraction=0.0",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"experiment.output_dir={tmp_path / 'runs'}",
        "model.encoder=resnet18",
        "model.encoder_weights=null",
        "model.decoder_channels=[8, 8, 8, 8, 8]",
        "logging.wandb=disabled",
    ]
    with pytest.raises(DataError, match="every wrinkle mask of the train split .* is empty"):
        Trainer(load_config(None, overrides))
    assert not (tmp_path / "runs").exists()


def test_a_cache_that_cannot_be_written_falls_back_to_decoding(tmp_path, monkeypatch, caplog):
    import errno

    import data.cache

    root = _folder(tmp_path / "data", n=4)
    reference = WrinkleDataset(folder_samples(root), 32, cache="memory")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data.cache.np, "save", disk_full)
    with caplog.at_level(logging.WARNING):
        dataset = WrinkleDataset(folder_samples(root), 32, cache="disk", cache_dir=tmp_path / "cache")
    assert len(dataset) == 4 and dataset.skipped == [] and dataset.uncached == 4  # nothing dropped
    assert "could not be cached" in caplog.text and "no space left on device" in caplog.text.lower()
    for index in range(4):
        assert all(np.array_equal(a, b) for a, b in zip(dataset.arrays(index), reference.arrays(index)))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no half-written entries


def test_non_square_samples_are_padded_exactly_as_predict_pads_them(tmp_path):
    from face.crop import load_mask_crop

    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    skin = np.zeros((60, 90), bool)
    skin[10:50, 20:70] = True
    write_png(tmp_path / "i.png", image)
    write_png(tmp_path / "s.png", skin)
    write_png(tmp_path / "m.png", np.zeros((60, 90), bool))
    sample_image, _, sample_skin = load_sample(Sample("i", tmp_path / "i.png", tmp_path / "m.png", tmp_path / "s.png", "folder"), 64)
    crop = load_mask_crop(image, skin, 64)
    assert np.array_equal(sample_image, crop.image) and np.array_equal(sample_skin, crop.skin)
    # Padded at the bottom (60 of 90 rows are the photo), not stretched to a square.
    assert (sample_image[43:] == 0).all() and sample_image[:42].std() > 30
    assert not sample_skin[43:].any()
