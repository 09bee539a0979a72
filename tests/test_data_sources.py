"""Published layouts with their quirks, merged sources, leak refusal, data.check, cache and patches."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from config import load_config
from data.cache import cached_path
from data.check import check_data
from data.check import main as check_main
from data.dataset import WrinkleDataset, split_samples_with_report
from data.decode import load_sample
from data.image_io import ImageReadError, write_png
from data.sources import DataError, Sample, folder_samples, kim_samples
from data.splits import assign_splits
from data.transforms import wrinkle_patch

SIZE = 64


def _ffhq_images(folder, ids, nested=True):
    rng = np.random.default_rng(1)
    for sample_id in ids:
        sub = folder / f"{int(sample_id) // 1000 * 1000:05d}" if nested else folder
        write_png(sub / f"{sample_id}.png", rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def _data_config(path, sources: list[str], split: str):
    """A config file whose data section lists `sources` (flow mappings' insides) and `split`."""
    listed = "".join(f"    - {{{source}}}\n" for source in sources)
    path.write_text(f"data:\n  image_size: {SIZE}\n  cache_dir: {path.parent / 'cache'}\n  sources:\n{listed}  split: {{{split}}}\n")
    return path


def _line_mask(row, value=255, background=0):
    mask = np.full((SIZE, SIZE), background, np.uint8)
    mask[row, 8:56] = value
    return mask


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), array)


@pytest.fixture
def two_sources(tmp_path):
    """FFHQ-Wrinkle ids 00000-00009 (0/1 masks) and Kim ids 00005-00014 (quirky masks), one image folder."""
    images = tmp_path / "ffhq" / "images1024x1024"
    ids = [f"{i:05d}" for i in range(15)]
    _ffhq_images(images, ids)
    moon = tmp_path / "ffhq-wrinkle"
    for i in ids[:10]:
        _write(moon / "manual_wrinkle_masks" / f"{i}.png", _line_mask(10, value=1))  # stored as 0/1
        labels = np.ones((SIZE // 2, SIZE // 2), np.uint8)
        (moon / "face_parsed_labels").mkdir(exist_ok=True)
        np.save(moon / "face_parsed_labels" / f"{i}.npy", labels)
    kim = tmp_path / "kim"
    for i in ids[5:]:
        _write(kim / "wrinkle_masks" / f"{i}.png", _line_mask(20, value=255, background=2))  # the release's background of 2
        _write(kim / "skin_masks" / f"{i}.png", np.full((SIZE, SIZE), 255, np.uint8))
    stray = _line_mask(20, background=2)
    stray[0, 0], stray[1, 1], stray[2, 2] = 1, 251, 253  # stray values seen in 3 released files
    _write(kim / "wrinkle_masks" / "00014.png", stray)
    test_ids = tmp_path / "test_ids.txt"
    test_ids.write_text("00003\n00006\n00007\n# a comment\n00099\n")
    config = _data_config(
        tmp_path / "combined.yaml",
        [f"kind: ffhq_wrinkle, root: {moon}, images: {images}", f"kind: kim, root: {kim}, images: {images}"],
        f"method: files, test_ids_file: {test_ids}, val_fraction: 0.2, seed: 1",
    )
    return tmp_path, config


def test_kim_masks_binarize_with_threshold_127(two_sources):
    tmp_path, _ = two_sources
    samples = {s.id: s for s in kim_samples(tmp_path / "kim", tmp_path / "ffhq" / "images1024x1024")}
    assert len(samples) == 10 and samples["00005"].mask_threshold == 127
    _, mask, _ = load_sample(samples["00005"], None)
    assert mask.sum() == 48  # background 2 is not wrinkle
    _, mask, _ = load_sample(samples["00014"], None)
    assert mask.sum() == 50 and mask[1, 1] and mask[2, 2] and not mask[0, 0]  # 251 and 253 are, 1 is not


def test_combined_sources_merge_split_and_report_the_overlap(two_sources):
    _, config = two_sources
    cfg = load_config(config)
    splits, report = split_samples_with_report(cfg)
    assert report.per_source == {"0:ffhq_wrinkle": 10, "1:kim": 10}
    assert report.overlaps == {"0:ffhq_wrinkle & 1:kim": 5}
    assert sorted(report.dropped["1:kim"]) == ["00005", "00006", "00007", "00008", "00009"]
    assert report.excluded_from_train["1:kim"] >= 2  # 00006 and 00007 are test ids: never trained on
    assert [s.id for s in splits["test"]] == ["00003", "00006", "00007"]
    assert all(s.source == "0:ffhq_wrinkle" for s in splits["test"])  # the first source provides them
    assert report.listed_but_missing == {"test": ["00099"]}
    train_ids = {s.id for s in splits["train"]}
    assert not train_ids & {"00003", "00006", "00007"} and len(train_ids) + len(splits["val"]) == 12


def test_data_check_reports_sources_overlap_and_exclusions(two_sources, capsys):
    tmp_path, config = two_sources
    report, problems = check_data(load_config(config))
    assert problems == []
    assert report["sources"]["1:kim"]["matched_pairs"] == 10 and report["sources"]["1:kim"]["empty_masks"] == 0
    assert report["overlaps"] == {"0:ffhq_wrinkle & 1:kim": 5}
    assert report["left_out_as_duplicates"] == {"1:kim": 5}
    assert report["splits"]["test"]["per_source"] == {"0:ffhq_wrinkle": 3, "1:kim": 0}
    out = tmp_path / "check.json"
    assert check_main(["--config", str(config), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["duplicates_that_are_val_or_test_ids"]["1:kim"] >= 2
    assert "overlap 0:ffhq_wrinkle & 1:kim: 5 ids" in capsys.readouterr().out


def test_data_check_fails_on_problems_that_corrupt_training(two_sources):
    tmp_path, config = two_sources
    for path in (tmp_path / "kim" / "wrinkle_masks").iterdir():  # inverted masks
        _write(path, 255 - _line_mask(20))
    (tmp_path / "kim" / "skin_masks" / "00012.png").write_bytes(b"broken")
    report, problems = check_data(load_config(config))
    assert any("mostly wrinkle" in p for p in problems)
    assert any("00012" in line for line in report["sources"]["1:kim"]["unreadable"])
    assert check_main(["--config", str(config), "--output", str(tmp_path / "c.json")]) == 1


def test_leaking_splits_are_refused(two_sources, tmp_path):
    root, config = two_sources
    val_ids = root / "val_ids.txt"
    val_ids.write_text("00001\n00003\n")
    cfg = load_config(config, [f"data.split.val_ids_file={val_ids}"])
    with pytest.raises(DataError, match="leak: 1 ids are in both"):
        split_samples_with_report(cfg)
    # the same image file under two ids, landing in different splits
    image = root / "ffhq" / "images1024x1024" / "00000" / "00001.png"
    twins = [Sample(f"twin{i}", image, None, None, "folder") for i in range(40)]
    from config import SplitConfig

    with pytest.raises(DataError, match="leak: .*00001.png"):
        assign_splits([("0:folder", twins)], SplitConfig(val_fraction=0.3, test_fraction=0.3))


def test_mask_of_another_aspect_ratio_is_reported_by_name(tmp_path):
    write_png(tmp_path / "images" / "a.png", np.zeros((64, 64, 3), np.uint8))
    write_png(tmp_path / "masks" / "a.png", np.zeros((64, 48), np.uint8))
    write_png(tmp_path / "images" / "b.png", np.zeros((64, 64, 3), np.uint8))
    write_png(tmp_path / "masks" / "b.png", np.zeros((128, 128), np.uint8))  # same aspect: resized
    samples = {s.id: s for s in folder_samples(tmp_path)}
    with pytest.raises(ImageReadError, match="masks/a.png.*aspect ratio"):
        load_sample(samples["a"], None)
    assert load_sample(samples["b"], None)[1].shape == (64, 64)


def test_disk_cache_is_used_and_rebuilt_when_a_source_changes(tmp_path):
    write_png(tmp_path / "images" / "a.png", np.full((80, 80, 3), 100, np.uint8))
    write_png(tmp_path / "masks" / "a.png", np.pad(_line_mask(10), 8))
    sample = folder_samples(tmp_path)[0]
    cache = tmp_path / "cache"
    first = WrinkleDataset([sample], 40, cache="disk", cache_dir=cache)
    path = cached_path(cache, sample, 40)
    assert first.entries == [path] and path.is_file()
    assert np.array_equal(first.arrays(0)[0], load_sample(sample, 40)[0])

    write_png(tmp_path / "images" / "a.png", np.full((80, 80, 3), 200, np.uint8))
    os.utime(tmp_path / "images" / "a.png", ns=(1, 1))  # another modification time
    second = WrinkleDataset([sample], 40, cache="disk", cache_dir=cache)
    assert second.entries[0] != path and second.arrays(0)[0].min() == 200
    assert WrinkleDataset([sample], 32, cache="disk", cache_dir=cache).entries[0] not in (path, second.entries[0])


def test_patches_are_mostly_on_wrinkles():
    rng = np.random.default_rng(0)
    image = np.zeros((256, 256, 3), np.uint8)
    mask = np.zeros((256, 256), bool)
    mask[200, 200:230] = True
    skin = np.ones_like(mask)
    hits = [wrinkle_patch(image, mask, skin, 64, 0.8, rng)[1].any() for _ in range(200)]
    assert 0.7 < np.mean(hits) < 0.95  # 80 % centred on wrinkles, a few of the rest hit by chance
    patch = wrinkle_patch(image, mask, skin, 64, 0.0, rng)
    assert patch[0].shape == (64, 64, 3) and patch[1].shape == patch[2].shape == (64, 64)


@pytest.fixture
def two_folders(tmp_path):
    """Two folder sources, a/ with faces 00000-00009 and b/ with 00010-00014 plus its own 00003."""

    def face(folder, stem, value):
        write_png(folder / "images" / f"{stem}.png", np.full((SIZE, SIZE, 3), value, np.uint8))
        write_png(folder / "masks" / f"{stem}.png", _line_mask(10))

    for i in range(10):
        face(tmp_path / "a", f"{i:05d}", 10 + i)
    for i in range(10, 15):
        face(tmp_path / "b", f"{i:05d}", 10 + i)
    config = _data_config(
        tmp_path / "folders.yaml",
        [f"kind: folder, root: {tmp_path / 'a'}", f"kind: folder, root: {tmp_path / 'b'}"],
        "val_fraction: 0.2, test_fraction: 0.2, seed: 1",
    )
    return tmp_path, config


def test_folder_sources_sharing_a_file_name_but_not_the_image_are_refused(two_folders, capsys):
    tmp_path, config = two_folders
    write_png(tmp_path / "b" / "images" / "00003.png", np.full((SIZE, SIZE, 3), 200, np.uint8))  # another face
    write_png(tmp_path / "b" / "masks" / "00003.png", _line_mask(30))
    first, second = (tmp_path / folder / "images" / "00003.png" for folder in ("a", "b"))
    with pytest.raises(DataError) as caught:
        split_samples_with_report(load_config(config))
    message = str(caught.value)
    assert str(first) in message and str(second) in message
    assert "data.sources.0" in message and "data.sources.1" in message and "rename" in message
    # data.check reports it as a problem, not a traceback
    _report, problems = check_data(load_config(config))
    assert len(problems) == 1 and str(second) in problems[0]
    assert check_main(["--config", str(config), "--output", str(tmp_path / "check.json")]) == 1
    assert "PROBLEM: " in capsys.readouterr().out


def test_folder_sources_sharing_an_identical_image_merge_first_wins(two_folders):
    tmp_path, config = two_folders
    for sub in ("images", "masks"):  # the same face, byte for byte, in both folders
        (tmp_path / "b" / sub / "00003.png").write_bytes((tmp_path / "a" / sub / "00003.png").read_bytes())
    splits, report = split_samples_with_report(load_config(config))
    assert report.overlaps == {"0:folder & 1:folder": 1} and report.dropped == {"1:folder": ["00003"]}
    merged = {s.id: s for split in splits.values() for s in split}
    assert len(merged) == 15 and merged["00003"].image == tmp_path / "a" / "images" / "00003.png"


def test_two_synthetic_sources_merge_only_when_their_faces_are_the_same(tmp_path):
    from config import SourceConfig, SplitConfig
    from data.sources import source_samples

    def synthetic(folder, seed):
        return source_samples(SourceConfig(kind="synthetic", root=str(tmp_path / folder), n_images=4, seed=seed), SIZE)

    same = [("0:synthetic", synthetic("s1", 1)), ("1:synthetic", synthetic("s2", 1))]  # same seed: the same faces
    _, report = assign_splits(same, SplitConfig(val_fraction=0.25, test_fraction=0.25))
    assert report.dropped == {"1:synthetic": [f"synth_{i:05d}" for i in range(4)]}
    other = [("0:synthetic", synthetic("s1", 1)), ("1:synthetic", synthetic("s3", 2))]
    with pytest.raises(DataError, match=r"data.sources.0 \(synthetic\) and data.sources.1 \(synthetic\) share 4 ids.*one synthetic source"):
        assign_splits(other, SplitConfig(val_fraction=0.25, test_fraction=0.25))


def test_a_mask_folder_holding_an_id_twice_is_refused(two_sources):
    tmp_path, _ = two_sources
    # what an earlier data.prepare left: Kim's skin masks unpacked inside wrinkle_masks/
    _write(tmp_path / "kim" / "wrinkle_masks" / "skin_masks" / "00005.png", np.full((SIZE, SIZE), 255, np.uint8))
    with pytest.raises(DataError, match="id 00005 twice"):
        kim_samples(tmp_path / "kim", tmp_path / "ffhq" / "images1024x1024")
