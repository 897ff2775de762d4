"""The tutorial's recipe, pinned: for a fixed seed, each scenario's epoch history is bit for bit what it was when
these values were taken, on the fast path and on the tutorial's loop. Taken first on 2026-12-05 (the same as before
the recipes and before backbones had their own preprocessing, checked), they were taken again on 2026-12-06 by the
same training code, after the same code had given other last bits on another CPU: now with kernels that every x86-64
CPU runs alike, and on fewer pictures and epochs.

Any change to the training code that moves one bit of a loss or an accuracy fails here. A change that means to
(a new default, a new recipe) takes new values on purpose: `python -m tests.test_recipe_pinned` prints them.
Generated pictures (4 training and 2 validation pictures per class: batches of 4, as in a larger set), random
ResNet-18 weights, the CPU on 2 threads with its plainest kernels (PLAIN_KERNELS, in a process of its own), 2 epochs
with StepLR stepping after epoch 1.
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
        ('0x1.4d571c0000000p-1', '0x1.8000000000000p-1', '0x1.2f5d1c8000000p-1', '0x1.8000000000000p-1'),
        ('0x1.da91680000000p-2', '0x1.0000000000000p+0', '0x1.eb0cdd0000000p-2', '0x1.0000000000000p+0'),
    ],
    ('finetune', False): [
        ('0x1.6242ae0000000p-1', '0x1.4000000000000p-1', '0x1.238f35a000000p+0', '0x1.0000000000000p-1'),
        ('0x1.c0d8dc0000000p-2', '0x1.0000000000000p+0', '0x1.994ba68000000p-1', '0x1.0000000000000p-1'),
    ],
    ('frozen', True): [
        ('0x1.5997da0000000p-1', '0x1.0000000000000p-1', '0x1.76cb79f95b000p+1', '0x1.0000000000000p-1'),
        ('0x1.4a792c0000000p+1', '0x1.0000000000000p-1', '0x1.c46de92c00000p-1', '0x1.0000000000000p-1'),
    ],
    ('frozen', False): [
        ('0x1.6d06600000000p-1', '0x1.0000000000000p-1', '0x1.150683bfff700p+2', '0x1.0000000000000p-1'),
        ('0x1.0456a60000000p+2', '0x1.0000000000000p-1', '0x1.3096377a6c000p+1', '0x1.0000000000000p-1'),
    ],
    ('frozen-tutorial', True): [
        ('0x1.6b38920000000p-1', '0x1.8000000000000p-2', '0x1.7cc1778000000p-1', '0x1.0000000000000p-1'),
        ('0x1.5fff500000000p-1', '0x1.0000000000000p-1', '0x1.47bc938000000p-1', '0x1.0000000000000p-1'),
    ],
    ('frozen-tutorial', False): [
        ('0x1.6d3fdc0000000p-1', '0x1.8000000000000p-2', '0x1.7bbac50000000p-1', '0x1.0000000000000p-1'),
        ('0x1.6108440000000p-1', '0x1.0000000000000p-1', '0x1.47b2dd8000000p-1', '0x1.0000000000000p-1'),
    ],
}
# The kernels a CPU picks round otherwise (AVX-512 against AVX2, and MKL's paths for Intel against AMD): these are
# taken with PyTorch's plainest kernels, oneDNN and NNPACK off (convolutions as matrix products), and MKL's results
# made the same on every x86-64 CPU (its conditional numerical reproducibility).
PLAIN_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def config(scenario: str, fast: bool) -> TrainConfig:
    return TrainConfig(backbone="resnet18", scenario=scenario, epochs=2, step_size=1, lr=0.01, seed=0,
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
        data = make_image_folder(Path(work) / "colours", train_per_class=4, val_per_class=2)
        weights = write_random_weights(Path(work))
        for scenario in SCENARIOS:
            for fast in (True, False):
                epochs = "".join(f"        {epoch!r},\n" for epoch in history(scenario, fast, data, weights))
                print(f"    ({scenario!r}, {fast}): [\n{epochs}    ],")
