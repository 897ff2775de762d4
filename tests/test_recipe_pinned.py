"""The tutorial's recipe, pinned: for a fixed seed, each scenario's epoch history is bit for bit what it was when
these values were taken (2026-12-05, before backbones had their own preprocessing: the same values as before the
recipes, checked), on the fast path and on the tutorial's loop.

Any change to the training code that moves one bit of a loss or an accuracy fails here. A change that means to
(a new default, a new recipe) takes new values on purpose: `python -m tests.test_recipe_pinned` prints them.
Generated pictures, random ResNet-18 weights, the CPU on 2 threads with its plainest kernels (PLAIN_KERNELS, in a
process of its own), 3 epochs with StepLR stepping after epoch 2.
"""
import ast
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from core.data import scan_dataset
from core.train import TrainConfig, train
from tests.conftest import make_image_folder, write_random_weights

SCENARIOS = ("finetune", "frozen", "frozen-tutorial")
# (scenario, fast) -> per epoch: train loss, train acc, val loss, val acc, as float.hex()
EXPECTED: dict[tuple[str, bool], list[tuple[str, str, str, str]]] = {
    ('finetune', True): [
        ('0x1.4690ea0000000p+0', '0x1.4000000000000p-1', '0x1.d78ec46dc0000p+0', '0x1.0000000000000p-1'),
        ('0x1.7820800000000p-1', '0x1.8000000000000p-1', '0x1.6e6bb98000000p+1', '0x1.0000000000000p-1'),
        ('0x1.3d30f80000000p-5', '0x1.0000000000000p+0', '0x1.37abbb8000000p-6', '0x1.0000000000000p+0'),
    ],
    ('finetune', False): [
        ('0x1.5236000000000p+0', '0x1.4000000000000p-1', '0x1.7925e3dee0000p+2', '0x1.0000000000000p-1'),
        ('0x1.3ab24e0000000p-1', '0x1.c000000000000p-1', '0x1.861e520000000p+1', '0x1.0000000000000p-1'),
        ('0x1.342e060000000p-5', '0x1.0000000000000p+0', '0x1.7f6a258000000p-5', '0x1.0000000000000p+0'),
    ],
    ('frozen', True): [
        ('0x1.1609a40000000p+3', '0x1.8000000000000p-2', '0x1.9733920000000p+4', '0x1.0000000000000p-1'),
        ('0x1.4dac140000000p+4', '0x1.0000000000000p-1', '0x1.a1240d8000000p+2', '0x1.0000000000000p-1'),
        ('0x1.6eca460000000p+2', '0x1.0000000000000p-1', '0x1.82f9099300000p-7', '0x1.0000000000000p+0'),
    ],
    ('frozen', False): [
        ('0x1.2f487e0000000p+3', '0x1.8000000000000p-2', '0x1.b8af090000000p+4', '0x1.0000000000000p-1'),
        ('0x1.8ed1cc0000000p+4', '0x1.0000000000000p-1', '0x1.86da55a000000p-9', '0x1.0000000000000p+0'),
        ('0x1.dce9340000000p-2', '0x1.c000000000000p-1', '0x1.fa43e1bfffbe0p+0', '0x1.0000000000000p-1'),
    ],
    ('frozen-tutorial', True): [
        ('0x1.5420de0000000p+0', '0x1.4000000000000p-1', '0x1.0149dd6000000p+0', '0x1.0000000000000p-1'),
        ('0x1.8241600000000p+0', '0x1.4000000000000p-1', '0x1.a60f2d3800000p-1', '0x1.0000000000000p-1'),
        ('0x1.2261740000000p+1', '0x1.0000000000000p-1', '0x1.0b37716000000p-1', '0x1.0000000000000p-1'),
    ],
    ('frozen-tutorial', False): [
        ('0x1.530e4a0000000p+0', '0x1.4000000000000p-1', '0x1.01ec52c800000p+0', '0x1.0000000000000p-1'),
        ('0x1.844a9c0000000p+0', '0x1.4000000000000p-1', '0x1.a8a11f5000000p-1', '0x1.0000000000000p-1'),
        ('0x1.2224e40000000p+1', '0x1.0000000000000p-1', '0x1.0c86898000000p-1', '0x1.0000000000000p-1'),
    ],
}
# The kernels a CPU may pick round otherwise (AVX-512 against AVX2): these are taken, and checked, with PyTorch's
# and oneDNN's plainest ones, which every x86-64 CPU runs alike.
PLAIN_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def config(scenario: str, fast: bool) -> TrainConfig:
    return TrainConfig(backbone="resnet18", scenario=scenario, epochs=3, step_size=2, lr=0.01, seed=0,
                       device="cpu", workers=0, fast=fast, compile="off")


def history(scenario: str, fast: bool, data: Path, weights: Path) -> list[tuple[str, str, str, str]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a sum split over other threads rounds otherwise
    try:
        result = train(config(scenario, fast), scan_dataset(data), weights)
    finally:
        torch.set_num_threads(threads)
    return [tuple(float(value).hex() for value in (epoch.train_loss, epoch.train_acc, epoch.val_loss, epoch.val_acc))
            for epoch in result.history]


@pytest.fixture(scope="module")
def histories() -> str:
    """Every scenario's history, as `python -m tests.test_recipe_pinned` prints them, with the plainest kernels."""
    done = subprocess.run([sys.executable, "-m", "tests.test_recipe_pinned"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, **PLAIN_KERNELS}, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "tutorial-loop"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_tutorial_recipe_trains_bit_for_bit_as_before(scenario, fast, histories):
    printed = ast.literal_eval("{" + histories + "}")
    assert printed[(scenario, fast)] == EXPECTED[(scenario, fast)]


if __name__ == "__main__":  # python -m tests.test_recipe_pinned: the values to pin, on the fixtures' inputs
    with tempfile.TemporaryDirectory() as work:
        data = make_image_folder(Path(work) / "colours")
        weights = write_random_weights(Path(work))
        for scenario in SCENARIOS:
            for fast in (True, False):
                epochs = "".join(f"        {epoch!r},\n" for epoch in history(scenario, fast, data, weights))
                print(f"    ({scenario!r}, {fast}): [\n{epochs}    ],")
