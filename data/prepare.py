"""`python -m data.prepare`: fetch the public wrinkle data sets and lay them out as the loaders expect.

    python -m data.prepare ffhq-wrinkle --root data/ffhq-wrinkle [--masks manual|weak|both] [--weak-limit N]
    python -m data.prepare kim --zip wrinkle_dataset.zip --root data/kim [--images data/ffhq-wrinkle/images1024x1024]

ffhq-wrinkle downloads the FFHQ-Wrinkle release (Moon et al. 2024: manual_wrinkle_masks.zip with
face_parsed_labels.zip, whose 1,000 label maps belong to the manual ids; weak_wrinkle_masks.zip with
`--masks weak` or `both`; and the list of their 100 test ids) and, using FFHQ's own metadata
(ffhq-dataset-v2.json, which lists every image's file and MD5), only the FFHQ images whose ids have masks.
The weak masks (50,000 texture maps, already restricted to skin, so no labels are fetched for them) need
about 70 GB of FFHQ images: `--weak-limit N` unpacks only the masks of the N smallest ids in the zip and
fetches only their images, so a larger N later extends a smaller one's download. Before a weak download
starts, the free space of the target folders is checked against an estimate (what is not downloaded yet
of the zip and the metadata, the masks to unpack, and the missing images at FFHQ's average size).
kim unpacks the Kim et al. release from a zip obtained from its authors (it is password-protected at
the source) and fetches its FFHQ images the same way. Downloads resume where they stopped, are verified
(MD5 where published, zip integrity otherwise) and only then moved into place; running the command
again skips what is already complete. `--mirror URL_OR_DIR` fetches every file from a copy laid out
like the remote (release zips at its top, FFHQ files at their published paths) instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from data.fetch import FetchError, fetch, remote_size
from engine.errors import OutputError, WrinkleError
from engine.fileio import atomic_write, file_digest, write_text_atomic

log = logging.getLogger(__name__)

# Moon et al.'s 100 evaluation ids, from the release's repository.
MOON_TEST_IDS_URL = "https://raw.githubusercontent.com/labhai/ffhq-wrinkle-dataset/HEAD/test_file_lists.txt"
# FFHQ's metadata file, as NVlabs publishes it (ffhq-dataset's download script).
FFHQ_JSON_SPEC = {
    "file_url": "https://drive.google.com/uc?id=16N0RV4fHI6joBuKbQAoG34V_cQk7vxSA",
    "file_path": "ffhq-dataset-v2.json",
    "file_size": 267793842,
    "file_md5": "425ae20f06a4da1d4dc0f46d40ba5fd6",
}
# The FFHQ-Wrinkle release files (labhai/ffhq-wrinkle-dataset); no checksums are published for them.
FFHQ_WRINKLE_ZIPS = {
    "manual_wrinkle_masks": "https://drive.google.com/uc?id=1QcexZsNp3xc_3HhCUgzN732RFMjFmD30",
    "weak_wrinkle_masks": "https://drive.google.com/uc?id=1irv2YTwbGoBSOCIaJC25AL6dcRYfcJWZ",
    "face_parsed_labels": "https://drive.google.com/uc?id=1Oje4gsfgsScBfLMwP-OobgoFK-DHOGqc",
}
MANUAL_MASK_COUNT, WEAK_MASK_COUNT = 1_000, 50_000  # as the release's README gives them
# Space estimates, used only where nothing better is known (no published sizes, no metadata on disk yet):
FFHQ_IMAGE_BYTES = 1_400_000  # FFHQ's README: images1024x1024 is 89.1 GB for 70,000 PNGs, rounded up
WEAK_MASK_BYTES = 200_000  # one weak mask PNG: skin-only texture maps of FFHQ faces measured 120-190 KB
ZIP_BYTES = {  # a release zip whose server gives no size, and as much again for its unpacked files
    "manual_wrinkle_masks": 50_000_000,
    "weak_wrinkle_masks": WEAK_MASK_COUNT * WEAK_MASK_BYTES,
    "face_parsed_labels": 300_000_000,  # 1,000 label maps of 512 x 512 bytes
}


class PrepareError(WrinkleError):
    """An option data.prepare cannot use as given; the message names it."""


class DiskSpaceError(OutputError):
    """Too little free space for a download; the message names the folder, what is needed and what is free."""


def _source(url: str, file_path: str, mirror: str | None) -> str:
    """The remote URL, or the same file in the mirror."""
    if mirror is None:
        return url
    return f"{mirror.rstrip('/')}/{file_path}" if "://" in mirror else str(Path(mirror) / file_path)


def _members(bundle: zipfile.ZipFile, archive: Path) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The zip's files with their path parts; directories and macOS metadata skipped, unsafe paths refused."""
    members = []
    for member in bundle.infolist():
        parts = PurePosixPath(member.filename).parts
        if member.is_dir() or not parts or "__MACOSX" in parts or parts[-1].startswith("._"):
            continue
        if PurePosixPath(member.filename).is_absolute() or ".." in parts:
            raise FetchError(f"{archive}: unsafe path {member.filename!r}")
        members.append((member, parts))
    return members


def zip_folders(archive: Path, folders: tuple[str, ...], password: bytes | None = None) -> set[str]:
    """Which of `folders` occur as a path component of some file in `archive`."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            if password:
                bundle.setpassword(password)
            return {folder for _, parts in _members(bundle, archive) for folder in folders if folder in parts[:-1]}
    except zipfile.BadZipFile as err:
        raise FetchError(f"{archive}: cannot unpack ({err})") from err


def extract_folder(archive: Path, root: Path, folder: str, password: bytes | None = None, require: bool = False) -> Path:
    """Unpack the files of `archive` that belong to `folder` into `root/folder/`, whatever nesting the zip uses.

    When some file's path has a component named `folder`, only such files are taken, each placed by its
    path below that component (a zip holding several folders gives each its own files). When none has
    (a single-folder release zipped without its name, or under another), every file is taken, placed
    below the zip's top level; `require=True` makes that case a FetchError instead. Absolute paths,
    `..` and macOS metadata are refused or skipped.
    """
    target = root / folder
    marker = root / f".{folder}.complete"
    if marker.is_file():
        return target
    try:
        with zipfile.ZipFile(archive) as bundle:
            if password:
                bundle.setpassword(password)
            bad = bundle.testzip()
            if bad is not None:
                raise FetchError(f"{archive}: corrupt member {bad}; delete the zip and run again")
            members = _members(bundle, archive)
            named = [(member, parts) for member, parts in members if folder in parts[:-1]]
            if not named and require:
                raise FetchError(f"{archive}: no {folder}/ folder in the zip")
            for member, parts in named or members:
                inner = parts[parts.index(folder) + 1 :] if named else parts[1:] if len(parts) > 1 else parts
                with bundle.open(member) as source, atomic_write(target.joinpath(*inner)) as out:
                    shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, RuntimeError) as err:
        if isinstance(err, FetchError):
            raise
        raise FetchError(f"{archive}: cannot unpack ({err})") from err
    write_text_atomic(marker, "ok\n")
    return target


def load_ffhq_metadata(root: Path, mirror: str | None) -> dict:
    """FFHQ's ffhq-dataset-v2.json (fetched and verified once, kept under `root`)."""
    spec = FFHQ_JSON_SPEC
    path = fetch(_source(spec["file_url"], spec["file_path"], mirror), root / spec["file_path"], spec["file_size"], spec["file_md5"])
    return json.loads(path.read_text())


def fetch_ffhq_images(ids: list[str], images: Path, metadata: dict, mirror: str | None) -> list[str]:
    """Fetch the FFHQ 1024 px images of `ids` into `images` (official nested layout); returns failures."""
    failed = []
    for sample_id in tqdm(sorted(ids), desc="FFHQ images", unit="image"):
        item = metadata.get(str(int(sample_id)))
        if item is None:
            failed.append(f"{sample_id}: not an FFHQ id")
            continue
        spec = item["image"]
        relative = PurePosixPath(spec["file_path"]).relative_to("images1024x1024")
        try:
            fetch(
                _source(spec["file_url"], spec["file_path"], mirror), images.joinpath(*relative.parts), spec["file_size"], spec["file_md5"]
            )
        except FetchError as err:
            failed.append(str(err))
            log.warning("%s", err)
    return failed


def _weak_members(bundle: zipfile.ZipFile, archive: Path) -> dict[str, zipfile.ZipInfo]:
    """{FFHQ id: member} of the weak masks in the zip (PNGs named by a number; only those below a
    weak_wrinkle_masks/ folder when the zip has one); an id found twice is a FetchError."""
    members = [(m, parts) for m, parts in _members(bundle, archive) if parts[-1].endswith(".png") and parts[-1][:-4].isdigit()]
    named = [(m, parts) for m, parts in members if "weak_wrinkle_masks" in parts[:-1]]
    found: dict[str, zipfile.ZipInfo] = {}
    for member, parts in named or members:
        sample_id = parts[-1][:-4]
        if sample_id in found:
            raise FetchError(f"{archive}: weak mask {sample_id} twice, {found[sample_id].filename} and {member.filename}")
        found[sample_id] = member
    return found


def choose_weak_ids(ids, limit: int | None) -> list[str]:
    """The ids `--weak-limit` takes: the `limit` smallest (all without a limit), so a larger limit extends a smaller one."""
    ordered = sorted(ids, key=int)
    return ordered if limit is None else ordered[:limit]


def by_thousand(folder: Path, sample_id: str) -> Path:
    """folder/{thousand}/{id}.png: FFHQ's nested layout, which the weak masks share (weak_wrinkle_masks/00000/00001.png)."""
    return folder / f"{int(sample_id) // 1000 * 1000:05d}" / f"{sample_id}.png"


def weak_mask_path(root: Path, sample_id: str) -> Path:
    """Where a weak mask goes: root/weak_wrinkle_masks/{thousand}/{id}.png, the published layout."""
    return by_thousand(root / "weak_wrinkle_masks", sample_id)


def ffhq_image_path(images: Path, sample_id: str) -> Path:
    """Where fetch_ffhq_images puts an FFHQ image: FFHQ's nested layout, images/{thousand}/{id}.png."""
    return by_thousand(images, sample_id)


def _unpack_error(archive: Path, err: Exception) -> FetchError:
    return FetchError(f"{archive}: cannot unpack ({err}); delete the zip and run again")


def _open_zip(archive: Path) -> zipfile.ZipFile:
    """The zip at `archive`; one that does not open is a FetchError naming it."""
    try:
        return zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise _unpack_error(archive, err) from err


def extract_weak_masks(archive: Path, root: Path, limit: int | None = None) -> list[str]:
    """Unpack the weak masks of the `limit` smallest ids of `archive` (all without a limit) into
    root/weak_wrinkle_masks/{thousand}/{id}.png, each checked against its CRC and written atomically;
    masks already there are kept. Returns the chosen ids."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = _weak_members(bundle, archive)
            if not members:
                raise FetchError(f"{archive}: no weak masks ({{thousand}}/{{id}}.png) in the zip")
            chosen = choose_weak_ids(members, limit)
            if limit is not None and limit > len(chosen):
                log.warning("%s holds %d weak masks, fewer than --weak-limit %d: taking them all", archive, len(chosen), limit)
            for sample_id in tqdm(chosen, desc="weak masks", unit="mask"):
                dest = weak_mask_path(root, sample_id)
                if not dest.is_file():
                    with bundle.open(members[sample_id]) as source, atomic_write(dest) as out:
                        shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as err:
        raise _unpack_error(archive, err) from err
    return chosen


def _verified_metadata(root: Path) -> dict | None:
    """FFHQ's metadata when it is already under `root` and verifies; None otherwise (nothing is fetched)."""
    spec = FFHQ_JSON_SPEC
    path = root / spec["file_path"]
    if path.is_file() and path.stat().st_size == spec["file_size"] and file_digest(path) == spec["file_md5"]:
        return json.loads(path.read_text())
    return None


def _still_to_fetch(dest: Path, total: int) -> int:
    """Bytes still to download of a `total`-byte file at `dest`: none when it is there, less its `.part`."""
    if dest.is_file():
        return 0
    part = dest.with_name(dest.name + ".part")
    return max(total - (part.stat().st_size if part.is_file() else 0), 0)


def _human(size: float) -> str:
    """A byte count in words: 512 bytes, 1.4 MB, 70.0 GB."""
    value, unit = float(size), "bytes"
    for bigger in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"


def space_needed(
    root: Path, images: Path, folders: list[str], weak_limit: int | None, mirror: str | None, metadata: dict | None
) -> list[tuple[Path, int, str]]:
    """(folder, bytes, what) for everything an ffhq-wrinkle run would still write: release zips not yet
    downloaded (their size from the server, else ZIP_BYTES), files to unpack (sizes from the zip when it
    is there), ffhq-dataset-v2.json, and the missing FFHQ images at the metadata's average size (else
    FFHQ_IMAGE_BYTES); ids not known before a zip is there count as the release's numbers (or the limit)."""
    needs = []
    ids: set[str] = set()
    unknown = 0  # images of masks not unpacked yet, ids unknown
    for folder in folders:
        archive = root / "downloads" / f"{folder}.zip"
        if not archive.is_file():
            total = remote_size(_source(FFHQ_WRINKLE_ZIPS[folder], f"{folder}.zip", mirror)) or ZIP_BYTES[folder]
            needs.append((archive.parent, _still_to_fetch(archive, total), f"{folder}.zip"))
        if folder == "weak_wrinkle_masks":
            if archive.is_file():
                with _open_zip(archive) as bundle:
                    members = _weak_members(bundle, archive)
                chosen = choose_weak_ids(members, weak_limit)
                ids.update(chosen)
                unpack = sum(members[i].file_size for i in chosen if not weak_mask_path(root, i).is_file())
            else:
                count = weak_limit or WEAK_MASK_COUNT
                unknown += count
                unpack = count * WEAK_MASK_BYTES
            needs.append((root, unpack, "weak masks to unpack"))
        elif not (root / f".{folder}.complete").is_file():
            if archive.is_file():
                with _open_zip(archive) as bundle:
                    unpack = sum(member.file_size for member, _ in _members(bundle, archive))
            else:
                unpack = ZIP_BYTES[folder]
            needs.append((root, unpack, f"{folder}/ to unpack"))
            unknown += MANUAL_MASK_COUNT if folder == "manual_wrinkle_masks" else 0
        elif folder == "manual_wrinkle_masks":
            ids.update(p.stem for p in (root / folder).rglob("*.png"))
    if metadata is None:
        spec = FFHQ_JSON_SPEC
        needs.append((root, _still_to_fetch(root / spec["file_path"], spec["file_size"]), spec["file_path"]))
        average = FFHQ_IMAGE_BYTES
    else:
        sizes = [item["image"]["file_size"] for item in metadata.values()]
        average = round(sum(sizes) / len(sizes)) if sizes else FFHQ_IMAGE_BYTES
    missing = unknown + sum(1 for i in ids if not ffhq_image_path(images, i).is_file())
    needs.append((images, missing * average, f"{missing} FFHQ images of about {_human(average)}"))
    return needs


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest ancestor that exists (where its files' space will come from)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_free_space(needs: list[tuple[Path, int, str]], hint: str) -> None:
    """DiskSpaceError, before anything is written, unless each file system has room for what goes to its folders."""
    by_device: dict[int, list[tuple[Path, int, str]]] = {}
    for folder, size, what in needs:
        if size > 0:
            by_device.setdefault(_existing(folder).stat().st_dev, []).append((folder, size, what))
    for items in by_device.values():
        folder = items[0][0] if len(items) == 1 else Path(os.path.commonpath([str(f.absolute()) for f, _, _ in items]))
        total = sum(size for _, size, _ in items)
        free = shutil.disk_usage(_existing(folder)).free
        if total > free:
            parts = ", ".join(f"{what}: {_human(size)}" for _, size, what in items)
            raise DiskSpaceError(f"{folder}: not enough free space: needs about {_human(total)} ({parts}), {_human(free)} free; {hint}")


def prepare_ffhq_wrinkle(
    root: Path, masks: str = "manual", mirror: str | None = None, images: Path | None = None, weak_limit: int | None = None
) -> list[str]:
    """Download and lay out FFHQ-Wrinkle under `root`; returns the files that failed. With weak masks,
    `weak_limit` takes only the masks (and images) of that many smallest ids, and the free space is
    checked before anything is fetched."""
    if weak_limit is not None and masks == "manual":
        raise PrepareError("--weak-limit: only with --masks weak or both (it limits the weak masks)")
    if weak_limit is not None and weak_limit < 1:
        raise PrepareError(f"--weak-limit: must be at least 1, got {weak_limit}")
    images = images or root / "images1024x1024"
    manual = ["manual_wrinkle_masks", "face_parsed_labels"] if masks in ("manual", "both") else []
    weak = masks in ("weak", "both")
    metadata = None
    if weak:
        metadata = _verified_metadata(root)
        needs = space_needed(root, images, manual + ["weak_wrinkle_masks"], weak_limit, mirror, metadata)
        check_free_space(needs, "make room, choose another --root or --images, or a smaller --weak-limit")
    root.mkdir(parents=True, exist_ok=True)
    for folder in manual:
        archive = fetch(_source(FFHQ_WRINKLE_ZIPS[folder], f"{folder}.zip", mirror), root / "downloads" / f"{folder}.zip")
        extract_folder(archive, root, folder)
        log.info("%s ready in %s", folder, root / folder)
    ids = {p.stem for p in (root / "manual_wrinkle_masks").rglob("*.png")} if manual else set()
    if weak:
        folder = "weak_wrinkle_masks"
        archive = fetch(_source(FFHQ_WRINKLE_ZIPS[folder], f"{folder}.zip", mirror), root / "downloads" / f"{folder}.zip")
        chosen = extract_weak_masks(archive, root, weak_limit)
        log.info("%d weak masks ready in %s", len(chosen), root / folder)
        ids.update(chosen)
    failed = []
    try:
        fetch(_source(MOON_TEST_IDS_URL, "test_file_lists.txt", mirror), root / "test_file_lists.txt")
    except FetchError as err:
        failed.append(str(err))
    metadata = metadata or load_ffhq_metadata(root, mirror)
    return failed + fetch_ffhq_images(sorted(ids), images, metadata, mirror)


def prepare_kim(archive: Path, root: Path, images: Path | None = None, mirror: str | None = None, password: str | None = None) -> list[str]:
    """Unpack Kim et al.'s zip under `root` and fetch the FFHQ images of its ids; returns failures."""
    if not archive.is_file():
        raise FetchError(f"--zip: no such file {archive}")
    secret = password.encode() if password else None
    expected = ("wrinkle_masks", "skin_masks")
    found = zip_folders(archive, expected, secret)
    if "wrinkle_masks" not in found:
        has = f"only {', '.join(f'{f}/' for f in sorted(found))}" if found else "neither"
        raise FetchError(f"{archive}: not Kim et al.'s layout: expected folders wrinkle_masks/ and skin_masks/ in the zip, it has {has}")
    for folder in expected:
        if folder in found:
            extract_folder(archive, root, folder, secret, require=True)
        else:
            log.warning("%s: no skin_masks/ folder in the zip: the whole image counts as skin", archive)
    stale = root / "wrinkle_masks" / "skin_masks"
    if stale.is_dir():
        raise FetchError(
            f"{stale}: skin masks unpacked among the wrinkle masks by an earlier version; "
            f"delete {root / 'wrinkle_masks'} and {root / '.wrinkle_masks.complete'} and run again"
        )
    ids = sorted(p.stem for p in (root / "wrinkle_masks").rglob("*.png"))
    metadata = load_ffhq_metadata(root, mirror)
    return fetch_ffhq_images(ids, images or root / "images1024x1024", metadata, mirror)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    ffhq = sub.add_parser("ffhq-wrinkle", help="FFHQ-Wrinkle masks, face-parsing labels and their FFHQ images")
    ffhq.add_argument("--root", required=True)
    ffhq.add_argument("--masks", choices=["manual", "weak", "both"], default="manual")
    ffhq.add_argument(
        "--weak-limit",
        type=int,
        metavar="N",
        help="with weak masks: only the N smallest ids in the zip and their images (a larger N later extends the download)",
    )
    ffhq.add_argument("--images", help="where FFHQ images go (default ROOT/images1024x1024)")
    ffhq.add_argument("--mirror", help="a URL or folder laid out like the remote, used instead of it")
    kim = sub.add_parser("kim", help="Kim et al.'s release from a local zip, plus its FFHQ images")
    kim.add_argument("--zip", required=True)
    kim.add_argument("--root", required=True)
    kim.add_argument("--password", help="the zip's password, if the authors gave you one")
    kim.add_argument("--images", help="where FFHQ images go (default ROOT/images1024x1024); share it with ffhq-wrinkle's")
    kim.add_argument("--mirror")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    images = Path(args.images) if args.images else None
    if args.dataset == "ffhq-wrinkle":
        failed = prepare_ffhq_wrinkle(Path(args.root), args.masks, args.mirror, images, args.weak_limit)
    else:
        failed = prepare_kim(Path(args.zip), Path(args.root), images, args.mirror, args.password)
    if failed:
        print(f"{len(failed)} files failed (run again to resume): {'; '.join(failed[:5])}", file=sys.stderr)
        return 3
    print(Path(args.root).resolve())
    return 0


if __name__ == "__main__":
    from engine.cli import run_cli

    raise SystemExit(run_cli(main))
