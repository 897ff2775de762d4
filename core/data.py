"""Data: where the data set lives, fetching the tutorial's set, checking a folder, reading its pictures, importing a
zip. Loaders are core.loaders'."""
from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from core.archive import extract_zip
from core.errors import DATA_ROOT, ArchiveError, DatasetError, ImageError
from core.images import open_image
from core.parallel import in_order
from core.staging import Lock, abandoned, remove, staging_file, staging_folder, staging_pattern

TUTORIAL_DATA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
TUTORIAL_DATA_NAME = "hymenoptera_data"
DATA_ROOT_ENV = "STUDIO_DATA_ROOT"
UPLOADS_FOLDER = "uploads"  # under the data root: data sets that came as zip files
SPLITS = ("train", "val")  # every data set has them
SCAN_FILE, SCAN_FORMAT = "scan.json", 1  # what a scan found, per file, kept beside the runs
TEST_SPLIT = "test"  # optional: pictures that no choice during training looks at, scored once with the kept weights
OnProgress = Callable[[int, "int | None"], None]


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV) or "data")


def tutorial_data_dir(data_root: Path | None = None) -> Path:
    return Path(data_root or default_data_root()) / TUTORIAL_DATA_NAME


def uploads_dir(data_root: Path | None = None) -> Path:
    return Path(data_root or default_data_root()) / UPLOADS_FOLDER


def known_datasets(data_root: Path | None = None) -> dict[str, Path]:
    """Label -> folder for the tutorial's set and every uploaded set that exists on disk."""
    found = {"Tutorial: ants and bees (hymenoptera_data)": tutorial_data_dir(data_root)}
    uploads = uploads_dir(data_root)
    if uploads.is_dir():
        for folder in sorted(p for p in uploads.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found[f"Uploaded: {folder.name}"] = folder
    return found


# ---------------------------------------------------------------- fetching the tutorial's set

def ensure_tutorial_data(
    data_root: Path | None = None, download: bool = True, progress: bool = True, on_progress: OnProgress | None = None
) -> Path:
    """Return the tutorial's data folder, downloading and extracting it first if it is missing."""
    target = tutorial_data_dir(data_root)
    if (target / "train").is_dir() and (target / "val").is_dir():
        return target
    if not download:
        raise DatasetError(_offline_instructions(target), DATA_ROOT)
    download_tutorial_data(target.parent, progress=progress, on_progress=on_progress)
    return target


def fetch_url(url: str, destination: Path, progress: bool = True, on_progress: OnProgress | None = None) -> None:
    """Stream `url` into `destination`, with a tqdm bar and/or on_progress(bytes_done, bytes_total or None)."""
    with urllib.request.urlopen(url, timeout=30) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=not progress) as bar:
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                if on_progress:
                    on_progress(done, total)
    if total is not None and done != total:
        raise ConnectionError(f"the download stopped after {done} of {total} bytes")


def download_tutorial_data(data_root: Path, progress: bool = True, on_progress: OnProgress | None = None) -> Path:
    """Download the official zip, check it, and move the data set into `data_root` in one rename."""
    data_root = Path(data_root)
    target = data_root / TUTORIAL_DATA_NAME
    try:
        data_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"Cannot create the data folder {data_root} ({exc}). "
                           f"Choose another data root ({DATA_ROOT_ENV}).", DATA_ROOT) from exc
    with tempfile.TemporaryDirectory(prefix=".download-", dir=data_root) as work:
        zip_path = Path(work) / "hymenoptera_data.zip"
        try:
            fetch_url(TUTORIAL_DATA_URL, zip_path, progress, on_progress)
        except (OSError, ValueError) as exc:  # URLError and socket errors are OSErrors
            raise DatasetError(f"Could not download the tutorial data ({_reason(exc)}). "
                               f"{_offline_instructions(target)}", DATA_ROOT) from exc
        try:
            unpacked = extract_zip(zip_path, Path(work) / "unpacked")
        except ArchiveError as exc:
            raise DatasetError(f"The downloaded data set is unusable: {exc} {_offline_instructions(target)}",
                               DATA_ROOT) from exc
        scan = scan_dataset(unpacked / TUTORIAL_DATA_NAME)
        scan.raise_if_invalid()
        if target.exists():
            shutil.rmtree(target)
        (unpacked / TUTORIAL_DATA_NAME).rename(target)
    return target


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


def _offline_instructions(target: Path) -> str:
    return (
        f"Without a network, download {TUTORIAL_DATA_URL} on another machine and unzip it so that "
        f"{target}/train and {target}/val exist, or set {DATA_ROOT_ENV} to the folder that holds "
        f"{TUTORIAL_DATA_NAME}."
    )


# ---------------------------------------------------------------- checking a folder

@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass
class DatasetScan:
    """What a data folder holds: classes, readable pictures per split, skipped files, problems."""

    root: Path
    classes: list[str]
    samples: dict[str, list[tuple[Path, int]]]
    skipped: list[SkippedFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    excluded: list[Path] = field(default_factory=list)  # pictures the user chose to leave out (`without`)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def has_test(self) -> bool:
        return TEST_SPLIT in self.samples

    @property
    def evaluation_splits(self) -> list[str]:
        """The splits that are only evaluated: "val", and "test" when the data set has it."""
        return [split for split in (*SPLITS, TEST_SPLIT) if split != "train" and split in self.samples]

    def counts(self) -> dict[str, dict[str, int]]:
        """Pictures per class for each split: {"train": {"ants": 124, ...}, ...}, "test" included when present."""
        result = {}
        for split, samples in self.samples.items():
            per_label = Counter(label for _, label in samples)
            result[split] = {name: per_label.get(index, 0) for index, name in enumerate(self.classes)}
        return result

    def raise_if_invalid(self) -> None:
        if self.problems:
            raise DatasetError(f"{self.root} cannot be used: " + " ".join(self.problems))

    def relative(self, path: Path) -> str:
        """A picture's name as runs and lists keep it: its path under the data set's folder, with '/'."""
        return Path(path).relative_to(self.root).as_posix()

    def without(self, files: list[str]) -> DatasetScan:
        """The scan without the pictures named in `files` (relative to its folder, as `relative` gives them),
        which are listed in `excluded`. Names of pictures it does not hold are ignored. A class left with no
        picture in a split is a problem, as it is in a scan."""
        leave_out = set(files)
        samples = {split: [(path, label) for path, label in pictures if self.relative(path) not in leave_out]
                   for split, pictures in self.samples.items()}
        excluded = [path for pictures in self.samples.values() for path, _ in pictures
                    if self.relative(path) in leave_out]
        scan = replace(self, samples=samples, excluded=[*self.excluded, *excluded], problems=list(self.problems))
        if self.ok and (empty := _empty_classes(scan)):
            scan.problems.append(f"leaving out the excluded pictures leaves no picture in {', '.join(empty)}; keep "
                                 "at least one picture of each class in each split.")
        return scan


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _is_readable_image(path: Path) -> str | None:
    """None when Pillow can decode `path`, else the reason it cannot."""
    if path.suffix.lower() not in IMG_EXTENSIONS:
        return f"not a picture file type ({path.suffix or 'no extension'})"
    try:
        open_image(path)
    except ImageError as exc:
        return str(exc)
    return None


def scan_dataset(root: Path, kept_in: Path | None = None) -> DatasetScan:
    """Check an ImageFolder-style folder: train/ and val/ (and test/ if there is one), one sub-folder per class,
    readable pictures.

    Files that are not readable pictures are skipped and listed; missing splits, mismatched classes,
    fewer than two classes or an empty class are problems that stop training. Every picture is decoded once to
    check it, on threads; with `kept_in` (a folder beside the runs, core.runs.dataset_dir) what was found is kept
    there, and a file of the same size and modification time is not decoded again.
    """
    root = Path(root)
    scan = DatasetScan(root=root, classes=[], samples={split: [] for split in SPLITS})
    if not root.is_dir():
        scan.problems.append(f"the folder {root} does not exist.")
        return scan
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        scan.problems.append(f"it needs the sub-folders train/ and val/ (missing: {', '.join(missing)}).")
        return scan
    classes = {split: [d.name for d in _visible_dirs(root / split)] for split in SPLITS}
    if classes["train"] != classes["val"]:
        scan.problems.append(
            f"train/ and val/ must hold the same class folders (train: {', '.join(classes['train']) or 'none'}; "
            f"val: {', '.join(classes['val']) or 'none'})."
        )
        return scan
    scan.classes = classes["train"]
    if len(scan.classes) < 2:
        scan.problems.append(f"it needs at least two class folders in train/ and val/ (found {len(scan.classes)}).")
        return scan
    splits = SPLITS
    if (root / TEST_SPLIT).is_dir():
        test_classes = [d.name for d in _visible_dirs(root / TEST_SPLIT)]
        if test_classes != scan.classes:
            scan.problems.append(f"test/ must hold the same class folders as train/ and val/ (test: "
                                 f"{', '.join(test_classes) or 'none'}; train: {', '.join(scan.classes)}).")
            return scan
        splits = (*SPLITS, TEST_SPLIT)
        scan.samples[TEST_SPLIT] = []
    found = [(split, label, path) for split in splits for label, name in enumerate(scan.classes)
             for path in sorted(p for p in (root / split / name).rglob("*") if p.is_file())
             if not path.name.startswith(".")]
    for (split, label, path), reason in zip(found, _checked([path for _, _, path in found], root, kept_in)):
        if reason:
            scan.skipped.append(SkippedFile(path, reason))
        else:
            scan.samples[split].append((path, label))
    if empty := _empty_classes(scan):
        scan.problems.append("every class needs at least one readable picture in each split "
                             f"(none in {', '.join(empty)}).")
    return scan


def _checked(paths: list[Path], root: Path, kept_in: Path | None) -> list[str | None]:
    """`_is_readable_image` of each path: from the scan kept in `kept_in` for files unchanged since (same size and
    modification time), else decoded now, on threads; what was found is kept there for the next scan."""
    record = Path(kept_in) / SCAN_FILE if kept_in else None
    known = _read_scan(record) if record else {}
    stats = {}
    for path in paths:
        with contextlib.suppress(OSError):
            stat = path.stat()
            stats[path] = [stat.st_size, stat.st_mtime_ns]
    names = {path: path.relative_to(root).as_posix() for path in paths}
    unknown = [path for path in paths if path not in stats or known.get(names[path], [None])[:2] != stats[path]]
    reasons = {path: known[names[path]][2] for path in paths if path not in unknown}
    reasons.update(zip(unknown, in_order(_is_readable_image, unknown)))
    if record and unknown:
        _write_scan(record, {names[path]: [*stats[path], reasons[path]] for path in paths if path in stats})
    return [reasons[path] for path in paths]


def _read_scan(record: Path) -> dict[str, list]:
    try:
        data = json.loads(record.read_text())
        files = data["files"] if data.get("format") == SCAN_FORMAT else {}
        return {name: entry for name, entry in files.items() if isinstance(entry, list) and len(entry) == 3
                and isinstance(entry[2], str | None)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_scan(record: Path, files: dict[str, list]) -> None:
    with contextlib.suppress(OSError):
        record.parent.mkdir(parents=True, exist_ok=True)
        with staging_file(record) as partial:
            partial.write_text(json.dumps({"format": SCAN_FORMAT, "files": files}))
            partial.rename(record)


def _empty_classes(scan: DatasetScan) -> list[str]:
    return [f"{split}/{name}" for split, per_class in scan.counts().items() for name, n in per_class.items() if n == 0]


def load_dataset(root: Path, kept_in: Path | None = None) -> DatasetScan:
    """Scan `root` (`kept_in`: see scan_dataset) and raise DatasetError if it cannot be trained on."""
    scan = scan_dataset(root, kept_in)
    scan.raise_if_invalid()
    return scan


# ---------------------------------------------------------------- loaders

class ImageListDataset(Dataset):
    """(path, label) pairs decoded with `open_image`, so training sees pictures as prediction does."""

    def __init__(self, samples: list[tuple[Path, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(open_image(path)), label


# ---------------------------------------------------------------- a data set from a zip file

IMPORT_STAGING = "import"  # an import works in a hidden locked folder `.import.xxxxxxxx` (core.staging)
# Work folders of imports that were killed: this version's, and the unlocked `.import-xxxxxxxx` of older ones.
IMPORT_LEFTOVERS = (staging_pattern(re.escape(IMPORT_STAGING)), re.compile(r"\.import-[a-z0-9_]{8}"))
_NAME_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR}


def remove_abandoned_imports(folder: Path) -> int:
    """Remove the work folders that killed imports left in `folder`; a live import's is never touched.
    Returns how many were removed."""
    removed = 0
    for pattern in IMPORT_LEFTOVERS:
        for path, _lock in abandoned(Path(folder), pattern):
            remove(path)
            removed += 1
    return removed


def folder_size(folder: Path) -> int:
    """Bytes held by the files under `folder` (links are not followed)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


def _check_quota(zip_path: Path, root: Path, quota_bytes: int) -> None:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # extract_zip says what is wrong with it
    used = folder_size(root)
    if used + unpacked > quota_bytes:
        mb = 2**20
        raise ArchiveError(
            f"{zip_path.name} unpacks to {unpacked / mb:.1f} MB, but uploads already take {used / mb:.1f} MB of the "
            f"{quota_bytes / mb:.1f} MB allowed for all uploads together. Upload a smaller zip."
        )


def _move_into_place(source: Path, folder: Path, name: str) -> Path:
    """Rename `source` to folder/NAME, or NAME-2, NAME-3...: the first name that is free, also when another
    import takes it at the same moment (its rename then wins, and this one tries the next name)."""
    for target in itertools.chain([folder / name], (folder / f"{name}-{n}" for n in itertools.count(2))):
        if target.exists() or target.is_symlink():
            continue
        try:
            os.rename(source, target)
        except OSError as exc:
            if isinstance(exc, FileExistsError) or exc.errno in _NAME_TAKEN:
                continue
            raise
        return target


def safe_folder_name(name: str) -> str:
    """The folder name an uploaded data set called `name` is unpacked to (before any -2, -3... is added)."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "dataset"


def import_dataset_zip(zip_path: Path, uploads_dir: Path, name: str, *, root: Path | None = None,
                       quota_bytes: int | None = None) -> tuple[Path, DatasetScan]:
    """Check and unpack a zip holding train/ and val/ (at its top or inside one folder) into uploads_dir/NAME
    (NAME-2, NAME-3... when the name is taken).

    `root` holds every upload (by default uploads_dir, which must be inside it). The import works in a hidden
    locked folder there, first removes those that killed imports left, and with `quota_bytes` refuses a zip
    that would take everything under `root` past the quota (imports with a quota run one at a time).
    Nothing is left behind when the zip or the data set in it is unusable. Returns (folder, scan).
    """
    zip_path, uploads_dir = Path(zip_path), Path(uploads_dir)
    root = Path(root or uploads_dir)
    safe_name = safe_folder_name(name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        uploads_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned_imports(root)
        with contextlib.ExitStack() as stack:
            if quota_bytes is not None:
                stack.callback(Lock(root).close)
                _check_quota(zip_path, root, quota_bytes)
            work = stack.enter_context(staging_folder(root, IMPORT_STAGING))
            unpacked = extract_zip(zip_path, work / "unpacked")
            data = unpacked
            visible = _visible_dirs(unpacked)
            if not (unpacked / "train").is_dir() and len(visible) == 1:
                data = visible[0]
            scan = scan_dataset(data)
            if not scan.ok:
                raise DatasetError(f"The zip cannot be used: {' '.join(scan.problems)} "
                                   "It needs train/ and val/, with one folder per class in each.")
            target = _move_into_place(data, uploads_dir, safe_name)
        return target, scan_dataset(target)
    except OSError as exc:
        raise DatasetError(
            f"Could not import {zip_path.name} into {uploads_dir} ({exc.strerror or exc}). Make room or fix the "
            f"permissions there, or choose another data root ({DATA_ROOT_ENV}).", DATA_ROOT) from exc
