"""Shared fixtures: the network guard, isolated settings, generated pictures and the real data set.

Real data and weights are found through the project's own settings, read once here before each test
gets a clean environment: $STUDIO_DATA_ROOT (or ./data) must hold hymenoptera_data, and the MobileNetV2
weights come from $STUDIO_WEIGHTS or torchvision's cache. With STUDIO_REQUIRE_REAL_DATA=1 (as in CI) a
missing data set or weights file fails those tests instead of skipping them.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import models

NETGUARD_DIR = Path(__file__).parent / "netguard"
sys.path.insert(0, str(NETGUARD_DIR))
import sitecustomize as netguard  # noqa: E402  (the guard module; installed below)

from core.data import default_data_root, scan_dataset, tutorial_data_dir  # noqa: E402
from core.models import find_local_weights, get_backbone  # noqa: E402

PROJECT_ENV = ("STUDIO_DATA_ROOT", "STUDIO_WEIGHTS", "STUDIO_RUNS_DIR")
REQUIRE_REAL_DATA = os.environ.get("STUDIO_REQUIRE_REAL_DATA") == "1"


def _find_real_inputs() -> tuple[Path | None, Path | None]:
    data = tutorial_data_dir(default_data_root())
    try:
        weights = find_local_weights(get_backbone("mobilenet_v2"))
    except Exception:
        weights = None
    return (data.resolve() if (data / "train").is_dir() else None), (weights[0].resolve() if weights else None)


REAL_DATA_DIR, REAL_MOBILENET_WEIGHTS = _find_real_inputs()


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: needs the real hymenoptera_data and MobileNetV2 weights")
    os.environ["STUDIO_NETGUARD"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD_DIR), os.environ.get("PYTHONPATH")]))
    netguard.install()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers share the cores: one thread each, and for what they start
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# The longest test files, longest first (CI of 2026-12-06: 377 s down to 84 s in one process). The two workers take
# files in the order collected (run_tests.sh: --no-loadscope-reorder), so starting with these, the short files fill
# the end and both workers finish together.
LONGEST_FILES = ("test_browser.py", "test_backbones.py", "test_real_data.py", "test_app.py", "test_cli.py",
                 "test_distributed.py", "test_experiment.py", "test_faults.py", "test_browser_newcomer.py")


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))


class NetworkLog:
    def __init__(self, path: Path):
        self.path = path
        self.expected = False

    def attempts(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch):
    """Each test starts with no project settings and an empty torchvision cache, and may not touch the network."""
    for name in PROJECT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    log = NetworkLog(tmp_path / "network-attempts.log")
    monkeypatch.setenv("STUDIO_NETGUARD_LOG", str(log.path))
    yield log
    if log.attempts() and not log.expected:
        pytest.fail("the test tried to reach the network:\n" + "\n".join(log.attempts()))


@pytest.fixture
def network_attempts(clean_environment) -> NetworkLog:
    """For tests of what happens without a network: the guard's refusals are expected and can be read."""
    clean_environment.expected = True
    return clean_environment


# ---------------------------------------------------------------- generated pictures

def make_picture(color: str, seed: int, size: int = 64) -> Image.Image:
    """A noisy picture whose dominant colour decides its class, with a random shape for variety."""
    rng = np.random.default_rng(seed)
    base = {"red": (200, 40, 40), "blue": (40, 60, 200), "green": (40, 180, 60)}[color]
    pixels = np.clip(rng.normal(base, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    x, y = rng.integers(0, size // 2, 2)
    draw.ellipse([x, y, x + size // 3, y + size // 3], fill=tuple(int(c * 0.7) for c in base))
    return image


def make_image_folder(root: Path, classes=("blue", "red"), train_per_class=8, val_per_class=4) -> Path:
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                seed = zlib.crc32(f"{split}/{label}/{index}".encode())
                suffix = ".png" if index % 2 else ".jpg"
                make_picture(label, seed).save(folder / f"{label}_{index}{suffix}")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Two colour classes, 8 training and 4 validation pictures each; read-only by convention."""
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "colours")


def write_random_weights(folder: Path) -> Path:
    """torchvision-format weight files (ImageNet head included) for the tutorial's backbones, randomly initialised from
    one seed: the same files every time. Named BACKBONE.pth: under torchvision's own (hash-suffixed) name they would
    be refused, their hash being another."""
    torch.manual_seed(1234)
    torch.save(models.resnet18().state_dict(), folder / "resnet18.pth")
    torch.save(models.mobilenet_v2().state_dict(), folder / "mobilenet_v2-test.pth")
    return folder


@pytest.fixture(scope="session")
def random_weights_dir(tmp_path_factory) -> Path:
    return write_random_weights(tmp_path_factory.mktemp("weights"))


# ---------------------------------------------------------------- the real data set

@pytest.fixture(scope="session")
def real_inputs() -> tuple[Path, Path]:
    """The real hymenoptera_data folder and MobileNetV2 ImageNet weights file."""
    missing = []
    if REAL_DATA_DIR is None:
        missing.append(f"hymenoptera_data under {default_data_root()} (set STUDIO_DATA_ROOT)")
    if REAL_MOBILENET_WEIGHTS is None:
        missing.append("MobileNetV2 ImageNet weights (set STUDIO_WEIGHTS to a file or folder)")
    if missing:
        message = "real data or weights not found: " + "; ".join(missing)
        if REQUIRE_REAL_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return REAL_DATA_DIR, REAL_MOBILENET_WEIGHTS


@pytest.fixture(scope="session")
def real_scan(real_inputs):
    return scan_dataset(real_inputs[0])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset, random_weights_dir):
    """A saved finetune run on the generated colours (MobileNetV2, 2 epochs)."""
    from core.runs import save_run
    from core.train import TrainConfig, train

    scan = scan_dataset(tiny_dataset)
    config = TrainConfig(backbone="mobilenet_v2", scenario="finetune", epochs=2, workers=0, device="cpu", lr=0.01)
    result = train(config, scan, random_weights_dir)
    return save_run(result, scan, tmp_path_factory.mktemp("runs"))


@pytest.fixture
def jobs():
    """A job manager of its own; a job still running at the end is cancelled and waited for."""
    from core.jobs import TrainingJobs

    manager = TrainingJobs()
    yield manager
    job = manager.snapshot()
    manager.cancel(owner=job.owner if job else None)
    manager.wait(60)


# What run.json holds for a run stopped before its first epoch finished.
UNTRAINED = {"status": "cancelled", "history": [], "best_epoch": None, "best_val_acc": 0.0, "val_predictions": {}}


def copy_run(run, runs_dir: Path, name: str, **changes) -> Path:
    """A copy of the saved `run` as runs_dir/NAME, its run.json changed: a non-empty dict (config, dataset) is
    merged into the one saved, any other value replaces it."""
    folder = Path(runs_dir) / name
    shutil.copytree(run.path, folder)
    data = json.loads((folder / "run.json").read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and value else value
    (folder / "run.json").write_text(json.dumps(data))
    return folder
