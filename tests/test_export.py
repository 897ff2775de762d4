"""Bundles: ONNX and TorchScript, checked against PyTorch, usable without this project."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from core.export import export_run
from core.images import open_image
from core.predict import load_predictor
from core.presets import EVAL_TRANSFORM

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {fmt: export_run(tiny_run, fmt, out) for fmt in ("onnx", "torchscript")}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_bundle_matches_pytorch_on_validation_pictures(bundles, fmt):
    result = bundles[fmt]
    assert result.pictures_checked == 8 and result.max_difference <= 1e-4
    with zipfile.ZipFile(result.path) as bundle:
        names = set(bundle.namelist())
        meta = json.loads(bundle.read("bundle.json"))
        card = bundle.read("MODEL_CARD.md").decode()
    assert names == {meta["model"], "bundle.json", "MODEL_CARD.md"}
    assert meta["classes"] == ["blue", "red"] and meta["preprocessing"]["center_crop"] == 224
    needed_lines = ("finetune", "MobileNetV2", "sha256", "Best", "Final", "| train | 8 | 8 | 16 |", "training time",
                    "on cpu")
    for needed in needed_lines:
        assert needed.lower() in card.lower(), needed


def test_a_torchscript_bundle_loads_with_plain_torch_jit_load(bundles, tiny_run, tiny_dataset):
    with zipfile.ZipFile(bundles["torchscript"].path) as bundle:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(io.BytesIO(bundle.read("model.torchscript.pt")))
    picture = tiny_dataset / tiny_run.val_predictions.files[0]
    expected = load_predictor(tiny_run).predict(picture).probabilities
    got = model(EVAL_TRANSFORM(open_image(picture)).unsqueeze(0))[0].tolist()
    assert got == pytest.approx(list(expected.values()), abs=1e-4)


def test_the_readme_example_runs_without_this_project(bundles, tiny_run, tiny_dataset, tmp_path):
    readme = (PROJECT / "README.md").read_text()
    code = re.search(r"<!-- bundle-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    shutil.copyfile(bundles["onnx"].path, tmp_path / "bundle.zip")
    picture = tiny_dataset / tiny_run.val_predictions.files[-1]
    shutil.copyfile(picture, tmp_path / "photo.jpg")
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "tests/netguard")}
    isolated = subprocess.run([sys.executable, "-c", "import core"], cwd=tmp_path, env=env, capture_output=True)
    assert isolated.returncode != 0, "the project must not be importable there"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = eval(result.stdout.strip())  # a dict literal of class -> probability
    expected = load_predictor(tiny_run).predict(picture).probabilities
    assert printed == pytest.approx(expected, abs=1e-4)


def test_the_command_line_writes_a_checked_bundle(tiny_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ["PYTHONPATH"]])}
    result = subprocess.run([sys.executable, "-m", "core", "export", "--run", str(tiny_run.path), "--format", "onnx",
                             "--out", str(tmp_path)], capture_output=True, text=True, cwd=PROJECT, env=env)
    assert result.returncode == 0, result.stderr
    assert "matches PyTorch on 8 validation pictures" in result.stdout
    assert (tmp_path / f"{tiny_run.id}-onnx.zip").is_file()
    refused = subprocess.run([sys.executable, "-m", "core", "export", "--format", "pdf"], capture_output=True,
                             text=True, cwd=PROJECT, env=env)
    assert refused.returncode == 2 and "invalid choice: 'pdf'" in refused.stderr
