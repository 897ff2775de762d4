"""Finding, downloading and checking data sets."""
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from core import data
from core import data as data_module
from core.data import (
    IMPORT_STAGING,
    ensure_tutorial_data,
    folder_size,
    import_dataset_zip,
    load_dataset,
    scan_dataset,
)
from core.errors import ArchiveError, DatasetError, StudioError
from core.loaders import LoaderSettings, disk_loaders
from core.staging import staging_folder
from tests.conftest import make_image_folder, make_picture


@pytest.fixture
def dataset(tmp_path, tiny_dataset):
    return Path(shutil.copytree(tiny_dataset, tmp_path / "copy"))


def test_a_good_folder_lists_classes_and_counts(dataset):
    scan = scan_dataset(dataset)
    assert scan.ok and scan.classes == ["blue", "red"]
    assert scan.counts() == {"train": {"blue": 8, "red": 8}, "val": {"blue": 4, "red": 4}}


def test_unreadable_files_are_skipped_and_reported(dataset):
    (dataset / "train/red/notes.txt").write_text("not a picture")
    (dataset / "train/red/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (dataset / "train/red/.DS_Store").write_bytes(b"\0")
    scan = scan_dataset(dataset)
    assert scan.ok
    assert sorted(s.path.name for s in scan.skipped) == ["broken.jpg", "notes.txt"]
    assert scan.counts()["train"]["red"] == 8
    reasons = {s.path.name: s.reason for s in scan.skipped}
    assert "file type" in reasons["notes.txt"] and "damaged" in reasons["broken.jpg"]


def test_missing_split_is_a_problem(dataset):
    shutil.rmtree(dataset / "val")
    with pytest.raises(DatasetError, match="train/ and val/.*missing: val"):
        load_dataset(dataset)


def test_different_classes_in_the_splits_are_a_problem(dataset):
    (dataset / "val/red").rename(dataset / "val/green")
    with pytest.raises(DatasetError, match="same class folders"):
        load_dataset(dataset)


def test_a_single_class_is_a_problem(tmp_path):
    folder = make_image_folder(tmp_path / "one", classes=("red",), train_per_class=2, val_per_class=1)
    with pytest.raises(DatasetError, match="at least two class"):
        load_dataset(folder)


def test_a_class_without_readable_pictures_is_a_problem(dataset):
    for picture in (dataset / "val/red").iterdir():
        picture.write_bytes(b"garbage")
    scan = scan_dataset(dataset)
    assert not scan.ok and "val/red" in scan.problems[0]
    assert len(scan.skipped) == 4


def test_missing_folder_is_a_problem(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nothing")


def test_loaders_use_the_tutorial_shapes(dataset):
    loaders = disk_loaders(scan_dataset(dataset), LoaderSettings(4, workers=0, seed=0))
    inputs, labels = next(iter(loaders["train"]))
    assert inputs.shape == (4, 3, 224, 224) and labels.dtype == torch.long
    inputs, _ = next(iter(loaders["val"]))
    assert inputs.shape == (4, 3, 224, 224)


def test_loaders_built_off_the_main_thread_start_no_process_and_load_the_same(dataset, monkeypatch):
    """The dashboard's pages and jobs run on threads of its server: a forked worker can wait for good on a lock
    another thread held, and a spawned one runs the page's script again as its __main__."""
    scan = scan_dataset(dataset)
    expected = [labels.tolist() for _, labels in disk_loaders(scan, LoaderSettings(4, workers=0, seed=0))["train"]]
    from tests.test_health import call_on_a_thread_without_fork

    def load() -> list:
        loader = disk_loaders(scan, LoaderSettings(4, workers=1, seed=0))["train"]
        return [labels.tolist() for _, labels in loader]

    assert call_on_a_thread_without_fork(monkeypatch, load) == expected
    assert disk_loaders(scan, LoaderSettings(4, workers=1, seed=0))["train"].num_workers == 1  # the command line's


# ---------------------------------------------------------------- the tutorial's set

def zip_of(folder: Path, path: Path, prefix="hymenoptera_data") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in folder.rglob("*"):
            archive.write(file, f"{prefix}/{file.relative_to(folder)}")
    return path


def fake_download(source_zip: Path):
    def download(url, destination, progress=True, on_progress=None):
        assert url == data.TUTORIAL_DATA_URL
        shutil.copyfile(source_zip, destination)
    return download


def test_existing_data_is_used_without_download(tmp_path, dataset, monkeypatch):
    shutil.copytree(dataset, tmp_path / "root/hymenoptera_data")
    monkeypatch.setattr(data, "fetch_url", lambda *a, **k: pytest.fail("downloaded"))
    assert ensure_tutorial_data(tmp_path / "root") == tmp_path / "root/hymenoptera_data"


def test_the_env_variable_chooses_the_data_root(tmp_path, dataset, monkeypatch):
    shutil.copytree(dataset, tmp_path / "elsewhere/hymenoptera_data")
    monkeypatch.setenv("STUDIO_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert ensure_tutorial_data(download=False) == tmp_path / "elsewhere/hymenoptera_data"


def test_download_extracts_the_data_set_in_one_step(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(data, "fetch_url", fake_download(zip_of(dataset, tmp_path / "d.zip")))
    folder = ensure_tutorial_data(tmp_path / "root", progress=False)
    assert scan_dataset(folder).counts()["val"] == {"blue": 4, "red": 4}
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["hymenoptera_data"]


def test_a_malicious_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("hymenoptera_data/train/a/../../../../evil.txt", "x")
    monkeypatch.setattr(data, "fetch_url", fake_download(bad))
    with pytest.raises(DatasetError, match="unusable.*leaves its folder"):
        ensure_tutorial_data(tmp_path / "root", progress=False)
    assert list((tmp_path / "root").iterdir()) == []


def test_an_interrupted_download_leaves_no_half_data_set(tmp_path, monkeypatch):
    def interrupted(url, destination, progress=True, on_progress=None):
        Path(destination).write_bytes(b"PK\x03\x04 partial")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(data, "fetch_url", interrupted)
    with pytest.raises(DatasetError, match="Could not download"):
        ensure_tutorial_data(tmp_path / "root", progress=False)
    assert list((tmp_path / "root").iterdir()) == []


def test_without_network_the_user_is_told_how_to_supply_the_folder(tmp_path, network_attempts):
    with pytest.raises(DatasetError) as error:
        ensure_tutorial_data(tmp_path / "root", progress=False)
    message = str(error.value)
    assert data.TUTORIAL_DATA_URL in message and "STUDIO_DATA_ROOT" in message
    assert "--" not in message and error.value.setting == "data_root"  # flags are the command line's to add
    assert any("download.pytorch.org" in attempt for attempt in network_attempts.attempts())
    assert not (tmp_path / "root/hymenoptera_data").exists()


def test_no_download_option_explains_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="unzip it"):
        ensure_tutorial_data(tmp_path / "root", download=False)


def test_a_real_download_from_a_local_server_reports_progress(tmp_path, dataset, monkeypatch):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    zip_of(dataset, served / "hymenoptera_data.zip")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(data, "TUTORIAL_DATA_URL", f"http://127.0.0.1:{server.server_port}/hymenoptera_data.zip")
        seen = []
        folder = ensure_tutorial_data(tmp_path / "root", progress=False, on_progress=lambda d, t: seen.append((d, t)))
    finally:
        server.shutdown()
    size = (served / "hymenoptera_data.zip").stat().st_size
    assert seen[-1] == (size, size)
    assert scan_dataset(folder).ok


# ---------------------------------------------------------------- a data set from a zip file

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def colours_zip(tmp_path, tiny_dataset) -> Path:
    return zip_of(tiny_dataset, tmp_path / "colours.zip", prefix="colours")


def test_an_imported_zip_becomes_a_data_set_and_a_taken_name_gets_a_number(tmp_path, colours_zip):
    first, scan = import_dataset_zip(colours_zip, tmp_path / "uploads", "colours")
    second, _ = import_dataset_zip(colours_zip, tmp_path / "uploads", "colours")
    assert (first.name, second.name) == ("colours", "colours-2") and scan.ok and scan.classes == ["blue", "red"]
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["colours", "colours-2"]


def test_two_imports_of_one_name_at_once_both_succeed_into_different_folders(tmp_path, colours_zip, monkeypatch):
    uploads = tmp_path / "uploads"
    both_ready = threading.Barrier(2, timeout=30)
    real_rename, waited = os.rename, set()

    def rename_together(source, target):  # both imports have chosen "colours" when the first one renames
        if Path(target).parent == uploads and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_ready.wait()
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename_together)
    results, failures = [], []

    def run():
        try:
            results.append(import_dataset_zip(colours_zip, uploads, "colours")[0])
        except Exception as exc:  # the test reports it below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and len(waited) == 2
    assert sorted(p.name for p in results) == ["colours", "colours-2"]
    assert all(scan_dataset(folder).counts()["train"] == {"blue": 8, "red": 8} for folder in results)
    assert sorted(p.name for p in uploads.iterdir()) == ["colours", "colours-2"]  # no work folder left


def test_an_os_error_during_an_import_is_a_studio_error_and_leaves_nothing(tmp_path, colours_zip, monkeypatch):
    real_rename = os.rename

    def disk_full(source, target):  # when the unpacked data set is moved into its place
        if Path(target).parent == tmp_path / "uploads":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", disk_full)
    with pytest.raises(StudioError, match=r"Could not import colours.zip .*\(No space left on device\). Make room"):
        import_dataset_zip(colours_zip, tmp_path / "uploads", "colours")
    assert list((tmp_path / "uploads").iterdir()) == []


def test_the_quota_refuses_a_zip_that_would_take_the_uploads_past_it(tmp_path, colours_zip, tiny_dataset):
    root = tmp_path / "uploads"
    size = sum(p.stat().st_size for p in tiny_dataset.rglob("*") if p.is_file())
    first, _ = import_dataset_zip(colours_zip, root / "alice", "colours", root=root, quota_bytes=int(size * 2.5))
    assert first == root / "alice/colours"
    with pytest.raises(ArchiveError, match=r"unpacks to 0.\d MB, but uploads already take 0.\d MB of the 0.\d MB"):
        import_dataset_zip(colours_zip, root / "bob", "colours", root=root, quota_bytes=int(size * 1.5))
    assert not (root / "bob").exists() or list((root / "bob").iterdir()) == []
    second, _ = import_dataset_zip(colours_zip, root / "bob", "colours", root=root, quota_bytes=int(size * 2.5))
    assert second == root / "bob/colours" and folder_size(root) == 2 * size


def test_leftovers_of_killed_imports_are_removed_but_a_live_import_is_not_touched(tmp_path, colours_zip):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    dead_new, dead_old = uploads / ".import.abcd1234", uploads / ".import-k2j4h6g8"  # this and the older style
    for leftover in (dead_new, dead_old):
        (leftover / "unpacked/train").mkdir(parents=True)
    keep = [uploads / ".import-notours", uploads / "import.abcd1234"]  # other names are not an import's
    for folder in keep:
        folder.mkdir()
    with staging_folder(uploads, IMPORT_STAGING) as live:
        (live / "half-unpacked.jpg").write_bytes(b"...")
        folder, _ = import_dataset_zip(colours_zip, uploads, "colours")
        assert live.is_dir() and (live / "half-unpacked.jpg").exists()
    assert not dead_new.exists() and not dead_old.exists()
    assert sorted(p.name for p in uploads.iterdir()) == sorted([folder.name, *(p.name for p in keep)])


KILLED_IMPORT = """
import sys, time
from pathlib import Path
import core.data

def stuck(zip_path, destination, limits=None):
    Path(destination).mkdir()
    (Path(destination) / "half.jpg").write_bytes(b"...")
    print(Path(destination).parent, flush=True)
    time.sleep(120)

core.data.extract_zip = stuck
core.data.import_dataset_zip(Path(sys.argv[1]), Path(sys.argv[2]), "colours")
"""


def test_the_next_import_cleans_up_after_an_import_killed_midway(tmp_path, colours_zip):
    uploads = tmp_path / "uploads"
    process = subprocess.Popen([sys.executable, "-c", KILLED_IMPORT, str(colours_zip), str(uploads)], cwd=PROJECT,
                               stdout=subprocess.PIPE, text=True)
    try:
        work = Path(process.stdout.readline().strip())
        assert work.parent == uploads and work.name.startswith(".import.") and (work / "unpacked/half.jpg").exists()
        import_dataset_zip(colours_zip, uploads, "first")  # while it lives, its folder stays
        assert (work / "unpacked/half.jpg").exists()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL and work.is_dir()  # what kill -9 leaves behind
    folder, scan = import_dataset_zip(colours_zip, uploads, "colours")
    assert not work.exists() and scan.ok
    assert sorted(p.name for p in uploads.iterdir()) == ["colours", "first"]


def add_test_split(root: Path, per_class: int = 3, classes=("blue", "red")) -> Path:
    """A test/ folder beside train/ and val/, generated like them."""
    for label in classes:
        folder = root / "test" / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            make_picture(label, 1000 + index).save(folder / f"{label}_test_{index}.png")
    return root


def test_a_test_folder_is_a_third_split_with_its_own_counts_and_loader(dataset):
    scan = scan_dataset(add_test_split(dataset))
    assert scan.ok and scan.has_test
    assert scan.counts()["test"] == {"blue": 3, "red": 3} and len(scan.samples["train"]) == 16
    loaders = disk_loaders(scan, LoaderSettings(4, workers=0))
    inputs, labels = next(iter(loaders["test"]))
    assert inputs.shape == (4, 3, 224, 224) and labels.tolist() == [0, 0, 0, 1]  # in order, unshuffled
    assert not scan_dataset(dataset.parent / "nothing").has_test


def test_a_test_folder_with_other_classes_is_a_problem(dataset):
    scan = scan_dataset(add_test_split(dataset, classes=("blue", "green")))
    assert not scan.ok and "test/ must hold the same class folders as train/ and val/" in scan.problems[0]


def test_a_second_scan_reads_what_the_first_kept_and_checks_only_changed_files(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "data")
    (data / "train/red/broken.jpg").write_bytes(b"not a picture")
    first = scan_dataset(data, tmp_path / "kept")
    checked = []
    original = data_module._is_readable_image
    monkeypatch.setattr(data_module, "_is_readable_image", lambda path: checked.append(path.name) or original(path))
    second = scan_dataset(data, tmp_path / "kept")
    assert checked == [] and second.samples == first.samples and second.skipped == first.skipped
    changed = data / "val/blue" / sorted(p.name for p in (data / "val/blue").iterdir())[0]
    changed.write_bytes(b"broken now")
    (data / "train/red/broken.jpg").unlink()
    third = scan_dataset(data, tmp_path / "kept")
    assert checked == [changed.name]  # only the file whose size and time changed is decoded again
    assert [skipped.path for skipped in third.skipped] == [changed]
    (tmp_path / "kept" / "scan.json").write_text('{"format": 1, "files": {"train/red/x.png": [1, 2]}}')  # damaged
    assert scan_dataset(data, tmp_path / "kept").samples == third.samples
