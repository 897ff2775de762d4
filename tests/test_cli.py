"""The command line as a user runs it: python -m core ..."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.runs import list_runs
from tests.conftest import UNTRAINED, copy_run

PROJECT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or PROJECT, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(PROJECT), os.environ["PYTHONPATH"]]), **(env or {})}, timeout=600)


def test_train_list_and_predict_on_a_folder(tmp_path, tiny_dataset, random_weights_dir):
    runs = tmp_path / "runs"
    trained = cli("train", "--scenario", "both", "--backbone", "mobilenet_v2", "--epochs", "1", "--workers", "0",
                  "--data", tiny_dataset, "--weights", random_weights_dir, "--runs-dir", runs)
    assert trained.returncode == 0, trained.stderr
    assert "train 16, val 8 pictures" in trained.stdout
    summary = trained.stdout[trained.stdout.index("scenario"):]
    assert "best val acc" in summary and "trainable / total params" in summary
    assert "finetune" in summary and "frozen" in summary and "completed" in summary
    assert "2,562 / 2,226,434" in summary  # frozen: only the new 1280 x 2 head trains
    saved = list_runs(runs)
    assert len(saved.runs) == 2 and not saved.damaged

    listed = cli("runs", "--runs-dir", runs)
    assert listed.returncode == 0 and listed.stdout.count(" completed ") == 2

    picture = next((tiny_dataset / "val/red").iterdir())
    predicted = cli("predict", picture, "--run", "latest:frozen", "--runs-dir", runs)
    assert predicted.returncode == 0, predicted.stderr
    assert f"{picture}: " in predicted.stdout and ("red" in predicted.stdout and "blue" in predicted.stdout)


def test_the_settings_come_from_the_environment(tmp_path, tiny_dataset, random_weights_dir):
    root = tmp_path / "root"
    root.mkdir()
    (root / "hymenoptera_data").symlink_to(tiny_dataset)
    env = {"STUDIO_DATA_ROOT": str(root), "STUDIO_WEIGHTS": str(random_weights_dir),
           "STUDIO_RUNS_DIR": str(tmp_path / "env-runs")}
    trained = cli("train", "--scenario", "frozen", "--epochs", "1", "--workers", "0", env=env)
    assert trained.returncode == 0, trained.stderr
    assert "resnet18.pth" in trained.stdout
    saved = list_runs(tmp_path / "env-runs")
    assert len(saved.runs) == 1 and not saved.damaged


def test_unreadable_pictures_are_reported(tmp_path, tiny_dataset):
    import shutil
    data = Path(shutil.copytree(tiny_dataset, tmp_path / "data"))
    (data / "train/red/broken.jpg").write_bytes(b"\xff\xd8 nope")
    checked = cli("data", "--data", data)
    assert checked.returncode == 0
    assert "Skipped 1 file(s)" in checked.stderr and "train/red/broken.jpg" in checked.stderr
    assert "train: blue 8, red 8" in checked.stdout


@pytest.mark.parametrize("args, expected", [
    (["train", "--scenario", "bogus"], "invalid choice: 'bogus'"),
    (["train", "--epochs", "many"], "invalid int value"),
    (["train", "--epochs", "0", "--data", "."], "epochs must be at least 1"),
    (["predict"], "the following arguments are required: images"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_non_zero_with_one_line(args, expected):
    result = cli(*args)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and expected in result.stderr and "Traceback" not in result.stderr


def test_missing_data_without_network_gives_one_sentence(tmp_path, network_attempts):
    result = cli("train", "--data-root", tmp_path / "empty", "--scenario", "frozen")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "hymenoptera_data.zip" in error[0] and "--data" in error[0]
    assert network_attempts.attempts()


def test_a_missing_data_folder_is_named(tmp_path):
    result = cli("train", "--data", tmp_path / "nowhere")
    assert result.returncode == 1 and f"{tmp_path / 'nowhere'}" in result.stderr and "Traceback" not in result.stderr


def test_predicting_a_file_that_is_not_a_picture(tiny_run, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = cli("predict", tmp_path / "notes.txt", "--run", tiny_run.path)
    assert result.returncode == 1 and "notes.txt is not a picture" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_runs_yet(tmp_path):
    result = cli("runs", "--runs-dir", tmp_path / "none")
    assert result.returncode == 0 and "No runs yet" in result.stdout


def test_missing_weights_are_explained_with_the_command_lines_option(tmp_path, tiny_dataset, network_attempts):
    result = cli("train", "--scenario", "frozen", "--backbone", "resnet18", "--epochs", "1", "--data", tiny_dataset,
                 "--runs-dir", tmp_path / "runs")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "STUDIO_WEIGHTS" in error[0] and "--weights FILE_OR_FOLDER" in error[0]
    assert network_attempts.attempts()


def test_an_unknown_run_points_to_the_list_of_runs(tmp_path, tiny_dataset):
    picture = next((tiny_dataset / "val/red").iterdir())
    result = cli("predict", picture, "--run", "nothing-like-this", "--runs-dir", tmp_path)
    assert result.returncode == 1 and "No run 'nothing-like-this'" in result.stderr
    assert "python -m core runs" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_learning_rate_that_is_not_a_finite_number_is_refused(value, tmp_path):
    result = cli("train", f"--lr={value}", "--data", tmp_path, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 1 and "lr must be a finite number" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_a_runs_folder_that_cannot_be_written_is_refused_before_training(tmp_path, tiny_dataset):
    (tmp_path / "runs").write_text("a file, not a folder")
    result = cli("train", "--scenario", "scratch", "--backbone", "mobilenet_v2", "--epochs", "1", "--data",
                 tiny_dataset, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Runs cannot be saved into" in result.stderr and "nothing was trained" in result.stderr
    assert "--runs-dir FOLDER" in result.stderr and "Data:" not in result.stdout  # before the data, before training


def test_a_folder_given_as_a_picture_is_named_as_a_folder(tiny_run, tiny_dataset):
    result = cli("predict", tiny_dataset / "val", "--run", tiny_run.path)
    assert result.returncode == 1 and "is a folder, not a picture" in result.stderr and "damaged" not in result.stderr


def test_one_damaged_run_leaves_the_others_usable(tmp_path, tiny_run, tiny_dataset):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.path, runs / tiny_run.id)
    shutil.copytree(tiny_run.path, runs / "20990101-000000-finetune-lenet5-0bad")
    path = runs / "20990101-000000-finetune-lenet5-0bad" / "run.json"
    path.write_text(path.read_text().replace('"backbone": "mobilenet_v2"', '"backbone": "lenet5"'))
    listed = cli("runs", "--runs-dir", runs)
    assert listed.returncode == 0 and tiny_run.id in listed.stdout and "lenet5" in listed.stderr
    picture = next((tiny_dataset / "val/red").iterdir())
    for reference in (tiny_run.id, "latest"):
        predicted = cli("predict", picture, "--run", reference, "--runs-dir", runs)
        assert predicted.returncode == 0 and f"Run: {tiny_run.id}" in predicted.stdout, predicted.stderr


def test_a_run_with_no_finished_epoch_is_explained_not_used(tmp_path, tiny_run, tiny_dataset):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.path, runs / tiny_run.id)
    untrained = copy_run(tiny_run, runs, "20990101-000000-frozen-mobilenet_v2-0ep0", **UNTRAINED)
    picture = next((tiny_dataset / "val/red").iterdir())
    latest = cli("predict", picture, "--runs-dir", runs)
    assert latest.returncode == 0 and f"Run: {tiny_run.id}" in latest.stdout
    by_id = cli("predict", picture, "--run", untrained.name, "--runs-dir", runs)
    assert by_id.returncode == 1 and "before its first epoch finished" in by_id.stderr
    assert by_id.stderr.count("\n") == 1


def test_the_progress_bar_measures_the_time_left_phase_by_phase(capsys):
    """While a frozen backbone's features are computed, the time left is theirs: the head's hundreds of batches on
    cached features take almost nothing, and are not counted at the features' speed (it said 1:31:20 for 21 min)."""
    import re
    import time

    from core.cli import StopSignals, train_with_progress_bar
    from core.results import BatchProgress, ScenarioPlan

    plan = ScenarioPlan("frozen", 3, {"features": 6, "train": 400, "val": 100},
                        {"features": 24, "train": 1600, "val": 400},
                        {"features": "forward", "train": "head-train", "val": "head-val"})

    def trainer(on_batch, _on_epoch):
        for batch in range(1, 7):
            time.sleep(0.15)
            on_batch(BatchProgress(0, 3, "features", batch, 6))
        for epoch in range(1, 4):
            for phase in ("train", "val"):
                for batch in range(1, plan.batches[phase] + 1):
                    on_batch(BatchProgress(epoch, 3, phase, batch, plan.batches[phase]))

    train_with_progress_bar("frozen", plan, StopSignals(), trainer)
    frames = re.split(r"[\r\n]", capsys.readouterr().err)
    during = [frame for frame in frames if "features once" in frame and re.search(r"\d+:\d+ left]", frame)]
    assert during, frames
    for frame in during:
        left = re.search(r"(\d+):(\d+) left", frame)
        assert int(left[1]) * 60 + int(left[2]) <= 2, frame  # at most 5 features batches of 0.15 s, not 2,500 more


def test_train_with_a_named_recipe_records_its_phases_and_runs_show_them(tmp_path, tiny_dataset, random_weights_dir):
    runs = tmp_path / "runs"
    trained = cli("train", "--scenario", "finetune", "--recipe", "fine-tune", "--epochs", "2", "--label-smoothing",
                  "0.1", "--workers", "0", "--data", tiny_dataset, "--weights", random_weights_dir, "--runs-dir", runs)
    assert trained.returncode == 0, trained.stderr
    assert " fine-tune " in trained.stdout  # the summary's recipe column
    run = list_runs(runs).runs[0]
    assert (run.config.recipe, run.config.optimizer, run.config.label_smoothing, run.config.lr) == (
        "fine-tune", "adamw", 0.1, 0.002)
    assert [(phase.name, phase.epochs) for phase in run.phase_records()] == [("head", 1), ("unfrozen", 1)]
    shown = cli("runs", "--show", run.id, "--runs-dir", runs)
    assert shown.returncode == 0, shown.stderr
    assert "head: the new last layer, on the frozen backbone's cached features, 1 epoch(s), adamw, one-cycle" in (
        shown.stdout)
    assert "unfrozen: every layer, 1 epoch(s), adamw, one-cycle, peak rates backbone, first half 1.0e-05" in (
        shown.stdout)


def test_a_recipe_that_unfreezes_is_refused_for_frozen_before_anything_starts(tmp_path, tiny_dataset):
    refused = cli("train", "--scenario", "frozen", "--recipe", "lp-ft", "--data", tiny_dataset, "--runs-dir",
                  tmp_path / "runs")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "needs a scenario that trains the backbone" in refused.stderr and not (tmp_path / "runs").exists()


def test_lr_find_prints_the_curve_and_the_suggested_rate(tmp_path, tiny_dataset, random_weights_dir):
    found = cli("lr-find", "--scenario", "frozen", "--data", tiny_dataset, "--weights", random_weights_dir,
                "--runs-dir", tmp_path / "runs")
    assert found.returncode == 0, found.stderr
    table = found.stdout[found.stdout.index("learning rate  smoothed loss"):].splitlines()
    rates = [float(line.split()[0]) for line in table[2:] if line[:1].isdigit()]
    assert len(rates) >= 8 and rates == sorted(rates)
    suggested = float(found.stdout.split("Suggested learning rate: ")[1].split()[0])
    assert rates[0] <= suggested <= rates[-1] and f"--lr {suggested:.2g}" in found.stdout
    assert not list_runs(tmp_path / "runs").runs  # nothing is saved
