"""`python -m data.prepare`: fetch the public wrinkle data sets and lay them out as the loaders expect.

    python -m data.prepare ffhq-wrinkle --root data/ffhq-wrinkle [--masks manual|weak|both]
    python -m data.prepare kim --zip wrinkle_dataset.zip --root data/kim [--images data/ffhq-wrinkle/images1024x1024]

ffhq-wrinkle downloads the FFHQ-Wrinkle release (Moon et al. 2024: manual_wrinkle_masks.zip, optionally
weak_wrinkle_masks.zip, face_parsed_labels.zip, and the list of their 100 test ids) and, using FFHQ's own metadata (ffhq-dataset-v2.json,
which lists every image's file and MD5), only the FFHQ images whose ids have masks. kim unpacks the
Kim et al. release from a zip obtained from its authors (it is password-protected at the source) and
fetches its FFHQ images the same way. Downloads resume where they stopped, are verified (MD5 where
published, zip integrity otherwise) and only then moved into place; running the command again
skips what is already complete. `--mirror URL_OR_DIR` fetches every file from a copy laid out like
the remote (release zips at its top, FFHQ files at their published paths) instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from data.fetch import FetchError, fetch
from engine.fileio import atomic_write, write_text_atomic

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


def prepare_ffhq_wrinkle(root: Path, masks: str = "manual", mirror: str | None = None, images: Path | None = None) -> list[str]:
    """Download and lay out FFHQ-Wrinkle under `root`; returns the files that failed."""
    root.mkdir(parents=True, exist_ok=True)
    wanted = ["manual_wrinkle_masks", "weak_wrinkle_masks"] if masks == "both" else [f"{masks}_wrinkle_masks"]
    for folder in wanted + ["face_parsed_labels"]:
        archive = fetch(_source(FFHQ_WRINKLE_ZIPS[folder], f"{folder}.zip", mirror), root / "downloads" / f"{folder}.zip")
        extract_folder(archive, root, folder)
        log.info("%s ready in %s", folder, root / folder)
    failed = []
    try:
        fetch(_source(MOON_TEST_IDS_URL, "test_file_lists.txt", mirror), root / "test_file_lists.txt")
    except FetchError as err:
        failed.append(str(err))
    ids = sorted({p.stem for folder in wanted for p in (root / folder).rglob("*.png")})
    metadata = load_ffhq_metadata(root, mirror)
    return failed + fetch_ffhq_images(ids, images or root / "images1024x1024", metadata, mirror)


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
        failed = prepare_ffhq_wrinkle(Path(args.root), args.masks, args.mirror, images)
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
