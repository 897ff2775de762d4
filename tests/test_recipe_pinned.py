"""The tutorial's recipe, pinned: for a fixed seed, each scenario's epoch history is bit for bit what it was when
these values were taken, on the fast path and on the tutorial's loop. They were first taken on 2026-12-05 (the same
as before the recipes and before backbones had their own preprocessing, checked); on 2026-12-06 they were taken
again, the same code giving other last bits on another CPU, with kernels that every x86-64 CPU runs alike.

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
        ('0x1.4729920000000p+0', '0x1.4000000000000p-1', '0x1.9c94f9ef80000p+0', '0x1.0000000000000p-1'),
        ('0x1.5397d80000000p-1', '0x1.8000000000000p-1', '0x1.367c4d8000000p+2', '0x1.0000000000000p-1'),
        ('0x1.d2e80e0000000p-6', '0x1.0000000000000p+0', '0x1.d484b18000000p-4', '0x1.0000000000000p+0'),
    ],
    ('finetune', False): [
        ('0x1.4873ac0000000p+0', '0x1.4000000000000p-1', '0x1.41e6ceeac0000p+1', '0x1.0000000000000p-1'),
        ('0x1.2c887c0000000p-1', '0x1.c000000000000p-1', '0x1.d1f78d8000000p+3', '0x1.0000000000000p-1'),
        ('0x1.71276a0000000p-5', '0x1.0000000000000p+0', '0x1.192aa84000000p+1', '0x1.0000000000000p-1'),
    ],
    ('frozen', True): [
        ('0x1.1609a60000000p+3', '0x1.8000000000000p-2', '0x1.9733900000000p+4', '0x1.0000000000000p-1'),
        ('0x1.4dac120000000p+4', '0x1.0000000000000p-1', '0x1.a124130000000p+2', '0x1.0000000000000p-1'),
        ('0x1.6eca4a0000000p+2', '0x1.0000000000000p-1', '0x1.82f9099300000p-7', '0x1.0000000000000p+0'),
    ],
    ('frozen', False): [
        ('0x1.2f487e0000000p+3', '0x1.8000000000000p-2', '0x1.b8af058000000p+4', '0x1.0000000000000p-1'),
        ('0x1.8ed1c60000000p+4', '0x1.0000000000000p-1', '0x1.86d9d62000000p-9', '0x1.0000000000000p+0'),
        ('0x1.dce92e0000000p-2', '0x1.c000000000000p-1', '0x1.fa43c03fffbe0p+0', '0x1.0000000000000p-1'),
    ],
    ('frozen-tutorial', True): [
        ('0x1.5420de0000000p+0', '0x1.4000000000000p-1', '0x1.0149dd9800000p+0', '0x1.0000000000000p-1'),
        ('0x1.8241600000000p+0', '0x1.4000000000000p-1', '0x1.a60f35f000000p-1', '0x1.0000000000000p-1'),
        ('0x1.2261760000000p+1', '0x1.0000000000000p-1', '0x1.0b37734000000p-1', '0x1.0000000000000p-1'),
    ],
    ('frozen-tutorial', False): [
        ('0x1.530e480000000p+0', '0x1.4000000000000p-1', '0x1.01ec568000000p+0', '0x1.0000000000000p-1'),
        ('0x1.844aa40000000p+0', '0x1.4000000000000p-1', '0x1.a8a1198000000p-1', '0x1.0000000000000p-1'),
        ('0x1.2224e80000000p+1', '0x1.0000000000000p-1', '0x1.0c86876000000p-1', '0x1.0000000000000p-1'),
    ],
}
# The kernels a CPU picks round otherwise (AVX-512 against AVX2, and MKL's paths for Intel against AMD): these are
# taken with PyTorch's plainest kernels, oneDNN and NNPACK off (convolutions as matrix products), and MKL's results
# made the same on every x86-64 CPU (its conditional numerical reproducibility).
PLAIN_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def config(scenario: str, fast: bool) -> TrainConfig:
    return TrainConfig(backbone="resnet18", scenario=scenario, epochs=3, step_size=2, lr=0.01, seed=0,
                       device="cpu", workers=0, fast=fast, compile="off")


def history(scenario: str, fast: bool, data: Path, weights: Path) -> list[tuple[str, str, str, str]]:
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(2)  # a sum split over other threads rounds otherwise
    torch.backends.mkldnn.enabled = False
    try:
        with torch.backends.nnpack.flags(enabled=False):
            result = train(config(scenario, fast), scan_dataset(data), weights)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn
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
