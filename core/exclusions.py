"""Exclusion lists: pictures of a data set that the user chose to leave out of training and evaluation.

A list belongs to one data set and is kept beside the runs (core.runs.dataset_dir), never in the data set's own
folder: the user's files are not deleted, moved or written. Each run records the pictures it left out.
"""
from __future__ import annotations

import json
from pathlib import Path

from core import staging
from core.data import DatasetScan, load_dataset
from core.errors import RUNS_DIR, RunError
from core.runs import dataset_dir

EXCLUSIONS_FILE = "excluded.json"


def exclusions_path(data_dir: Path, runs_dir: Path | None = None) -> Path:
    return dataset_dir(data_dir, runs_dir) / EXCLUSIONS_FILE


def read_exclusions(data_dir: Path, runs_dir: Path | None = None) -> list[str]:
    """The pictures on the data set's exclusion list (relative to its folder), sorted; empty when it has none."""
    path = exclusions_path(data_dir, runs_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RunError(f"The exclusion list {path} is damaged ({exc}). Remove it to start a new list; the data set's "
                       "pictures are untouched.", RUNS_DIR) from exc
    files = data.get("excluded") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(file, str) for file in files):
        raise RunError(f"The exclusion list {path} is damaged (no list of names). Remove it to start a new list; the "
                       "data set's pictures are untouched.", RUNS_DIR)
    return sorted(set(files))


def write_exclusions(data_dir: Path, files: list[str], runs_dir: Path | None = None) -> list[str]:
    """Replace the data set's exclusion list with `files` (relative to its folder); written whole or not at all."""
    files = sorted(set(files))
    for file in files:
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise ValueError(f"{file!r} is not a picture of the data set: give its path under the data set's folder, "
                             "such as train/ants/0013035.jpg.")
    path = exclusions_path(data_dir, runs_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with staging.staging_file(path) as partial:
            partial.write_text(json.dumps({"data_dir": str(Path(data_dir).resolve()), "excluded": files}, indent=2))
            partial.rename(path)
    except OSError as exc:
        raise RunError(f"The exclusion list cannot be saved into {path.parent} ({exc.strerror or exc}). Choose a runs "
                       "folder that can be written to.", RUNS_DIR) from exc
    return files


def change_exclusions(data_dir: Path, add: list[str] = (), remove: list[str] = (),
                      runs_dir: Path | None = None) -> list[str]:
    """Add pictures to the data set's exclusion list and take others off it; returns the new list."""
    files = (set(read_exclusions(data_dir, runs_dir)) | set(add)) - set(remove)
    return write_exclusions(data_dir, sorted(files), runs_dir)


def training_scan(data_dir: Path, excluded: list[str], runs_dir: Path | None = None) -> DatasetScan:
    """The data set a run or an experiment trains on: checked, without the pictures of `excluded` (the exclusion
    list as the caller read it when it was asked to train; they are listed in its `excluded`). Every way of training
    (the command line, the dashboard's jobs, and so the experiments) leaves pictures out here and nowhere else. The
    scan is kept beside the runs in `runs_dir` (core.data.scan_dataset)."""
    scan = load_dataset(data_dir, dataset_dir(data_dir, runs_dir)).without(excluded)
    scan.raise_if_invalid()
    return scan
