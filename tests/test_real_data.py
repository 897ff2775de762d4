"""The tutorial's real data set with real ImageNet-pretrained MobileNetV2 weights.

Thresholds come from runs measured on a 2-core CPU (seeds 0, 1, 2; 2 epochs; tutorial recipe):
frozen 0.941 / 0.967 / 0.948, frozen-tutorial 0.908 / 0.915 / 0.830, scratch 0.614 / 0.582 / 0.549.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.models import build_model
from core.predict import load_predictor
from core.runs import find_run, save_run
from core.train import TrainConfig, train

pytestmark = pytest.mark.real_data
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(real_inputs, real_scan, tmp_path_factory):
    """Two epochs of each pretrained-or-not scenario, seed 0, saved into one runs folder."""
    _, weights = real_inputs
    runs_dir = tmp_path_factory.mktemp("real-runs")
    results = {}
    for scenario in ("frozen", "frozen-tutorial", "scratch"):
        config = TrainConfig(backbone="mobilenet_v2", scenario=scenario, epochs=2, seed=0, device="cpu")
        result = train(config, real_scan, weights)
        results[scenario] = (result, save_run(result, real_scan, runs_dir))
    return results, runs_dir


def test_the_real_data_set_is_read_as_the_tutorial_reads_it(real_scan):
    assert real_scan.ok and real_scan.classes == ["ants", "bees"]
    # torchvision's ImageFolder skips the GIF placeholder too: it is not one of its picture types.
    assert real_scan.counts() == {"train": {"ants": 123, "bees": 121}, "val": {"ants": 70, "bees": 83}}
    assert [s.path.name for s in real_scan.skipped] == ["imageNotFound.gif"]


def test_the_real_weights_load_without_the_classifier(real_inputs):
    built = build_model("mobilenet_v2", "frozen", 2, real_inputs[1])
    assert built.weights_source.kind in ("file", "torchvision-cache")
    assert built.trainable_params == 1280 * 2 + 2


def test_frozen_feature_extractor_reaches_090_in_two_epochs(trained):
    result, record = trained[0]["frozen"]
    assert result.best_val_acc >= 0.90, result.history
    assert record.weights_source.sha256


def test_scratch_stays_far_below_transfer_learning(trained):
    frozen, scratch = trained[0]["frozen"][0], trained[0]["scratch"][0]
    assert scratch.best_val_acc <= 0.75, scratch.history
    assert frozen.best_val_acc - scratch.best_val_acc >= 0.15


def test_the_tutorials_frozen_mode_moves_batchnorm_statistics_and_ours_does_not(real_inputs, trained):
    pretrained = build_model("mobilenet_v2", "frozen", 2, real_inputs[1]).model.state_dict()
    ours = trained[0]["frozen"][0].model.state_dict()
    tutorial = trained[0]["frozen-tutorial"][0].model.state_dict()
    key = "features.1.conv.0.1.running_mean"
    assert torch.equal(ours[key], pretrained[key])
    assert not torch.equal(tutorial[key], pretrained[key])
    assert trained[0]["frozen-tutorial"][0].best_val_acc >= 0.75


def test_a_saved_real_run_classifies_validation_pictures(trained, real_inputs):
    runs_dir = trained[1]
    run = find_run("latest:frozen", runs_dir)
    predictor = load_predictor(run)
    data_dir = real_inputs[0]
    files, labels = run.val_predictions.files, run.val_predictions.labels
    sample = list(zip(files, labels))[::15]
    correct = sum(predictor.predict(data_dir / f).top_class == run.class_names[label] for f, label in sample)
    assert correct >= len(sample) - 2


def test_the_command_line_trains_and_predicts_on_real_data(real_inputs, tmp_path):
    data_dir, weights = real_inputs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ["PYTHONPATH"]])}
    common = dict(capture_output=True, text=True, cwd=PROJECT, env=env, timeout=600)
    trained = subprocess.run([sys.executable, "-m", "core", "train", "--scenario", "frozen", "--backbone",
                              "mobilenet_v2", "--epochs", "1", "--data-root", str(data_dir.parent), "--weights",
                              str(weights), "--runs-dir", str(tmp_path / "runs"), "--no-download"], **common)
    assert trained.returncode == 0, trained.stderr
    assert "imageNotFound.gif" in trained.stderr and "train 244, val 153 pictures" in trained.stdout
    bee = data_dir / "val/bees/72100438_73de9f17af.jpg"
    predicted = subprocess.run([sys.executable, "-m", "core", "predict", str(bee), "--run", "latest",
                                "--runs-dir", str(tmp_path / "runs")], **common)
    assert predicted.returncode == 0, predicted.stderr
    assert f"{bee}: bees" in predicted.stdout


def train_on_real_data(real_inputs, runs_dir: Path, *args: str) -> subprocess.CompletedProcess:
    data_dir, weights = real_inputs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ["PYTHONPATH"]])}
    return subprocess.run([sys.executable, "-m", "core", "train", "--backbone", "mobilenet_v2", "--data-root",
                           str(data_dir.parent), "--weights", str(weights), "--runs-dir", str(runs_dir),
                           "--no-download", "--seed", "0", *args], capture_output=True, text=True, cwd=PROJECT,
                          env=env, timeout=900)


def test_lp_ft_reaches_094_in_five_epochs_on_real_data(real_inputs, tmp_path):
    trained = train_on_real_data(real_inputs, tmp_path, "--recipe", "lp-ft", "--scenario", "finetune", "--epochs",
                                 "5")
    assert trained.returncode == 0, trained.stderr
    run = find_run("latest", tmp_path)
    assert run.best_val_acc >= 0.94, run.history
    probe, finetune = run.phase_records()
    assert probe.name == "probe" and "converged in" in probe.outcome and finetune.epochs == 5


def test_fine_tune_completes_on_real_data_and_records_both_phases(real_inputs, tmp_path):
    trained = train_on_real_data(real_inputs, tmp_path, "--recipe", "fine-tune", "--scenario", "finetune",
                                 "--epochs", "2")  # 1 epoch of the head on the frozen backbone, then 1 of every layer
    assert trained.returncode == 0, trained.stderr
    run = find_run("latest", tmp_path)
    assert run.status == "completed" and [epoch.phase for epoch in run.history] == ["head", "unfrozen"]
    assert [(phase.name, phase.trains, phase.epochs) for phase in run.phase_records()] == [
        ("head", "the new last layer, on the frozen backbone's cached features", 1), ("unfrozen", "every layer", 1)]
    assert run.history[1].rates["head"] / run.history[1].rates["backbone, first half"] == pytest.approx(100)
