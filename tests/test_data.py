"""Finding, downloading and checking data sets."""
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from core import data
from core.data import ensure_tutorial_data, load_dataset, make_loaders, scan_dataset
from core.errors import DatasetError
from tests.conftest import make_image_folder


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
    loaders = make_loaders(scan_dataset(dataset), batch_size=4, workers=0, seed=0)
    inputs, labels = next(iter(loaders["train"]))
    assert inputs.shape == (4, 3, 224, 224) and labels.dtype == torch.long
    inputs, _ = next(iter(loaders["val"]))
    assert inputs.shape == (4, 3, 224, 224)


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
