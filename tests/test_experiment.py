"""Experiments (core.experiment): the grid of scenarios x recipes x seeds x training pictures per class, its subsets,
the shared features of a frozen backbone, resuming after a kill, and the command line's table."""
import functools
import hashlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import core.experiment
import core.folding
from core.config import RECIPE_KNOBS
from core.data import scan_dataset
from core.errors import ConfigError
from core.experiment import (
    Cell,
    ExperimentPlan,
    ExperimentRunner,
    default_name,
    estimate_seconds,
    estimate_training,
    recipe_configs,
    record_plan,
    repeats,
    results,
    subset,
)
from core.recipes import recipe_settings
from core.results import BatchProgress
from core.runs import EXPERIMENTS_FOLDER, METADATA_FILE, list_runs
from core.train import TrainConfig, Trainer
from tests.conftest import make_image_folder, make_picture

PROJECT = Path(__file__).resolve().parents[1]
CLASSES = ("blue", "green", "red")
TRAIN_COUNTS = {"blue": 10, "green": 6, "red": 3}  # unequal on purpose


# ---------------------------------------------------------------- helpers

MOBILENET = "mobilenet_v2"


def recipe(**changes) -> TrainConfig:
    return TrainConfig(**{"backbone": "mobilenet_v2", "scenario": "frozen", "epochs": 1, "device": "cpu",
                          "workers": 0, **changes})


def make_plan(name, data_dir, scenarios, seeds, sizes, **changes) -> ExperimentPlan:
    return ExperimentPlan(name, str(data_dir), recipe(**changes), scenarios, seeds, sizes)


def run_grid(plan, data_dir, runs_dir, weights) -> ExperimentRunner:
    runner = ExperimentRunner(plan, scan_dataset(data_dir), runs_dir, weights)
    for cell in plan.grid():
        runner.save(cell, runner.train_cell(cell))
    return runner


def train_names(scan) -> list[str]:
    return [str(path.relative_to(scan.root)) for path, _ in scan.samples["train"]]


def per_class(scan) -> dict[str, list[str]]:
    found = defaultdict(list)
    for path, label in scan.samples["train"]:
        found[scan.classes[label]].append(str(path.relative_to(scan.root)))
    return found


def run_folders(runs_dir: Path) -> set[str]:
    """The saved runs' folders: not the experiments folder, not hidden staging folders."""
    if not runs_dir.is_dir():
        return set()
    return {p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
            and p.name != EXPERIMENTS_FOLDER and (p / METADATA_FILE).is_file()}


def cli_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_") or k.startswith("STUDIO_NETGUARD")}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), os.environ["PYTHONPATH"]])
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT, env=env or cli_env(), timeout=300)


class CountingModule(nn.Module):
    """The folded backbone, wrapped: records the pictures that go through it."""

    def __init__(self, inner: nn.Module, seen: list[torch.Tensor]):
        super().__init__()
        self.inner, self.seen = inner, seen

    def forward(self, pictures):
        self.seen.append(pictures.detach().clone())
        return self.inner(pictures)


@pytest.fixture
def backbone_passes(monkeypatch):
    """The folding of a frozen backbone whose features are cached, wrapped: (backbones folded, batches of pictures the
    folded backbone saw)."""
    real_folding = core.folding.FoldedEvaluation
    calls: list[int] = []
    seen: list[torch.Tensor] = []

    def counting_folding(model):
        calls.append(1)
        folded = real_folding(model)
        return lambda: CountingModule(folded(), seen)

    monkeypatch.setattr(core.folding, "FoldedEvaluation", counting_folding)
    return calls, seen


# ---------------------------------------------------------------- data sets

@pytest.fixture(scope="module")
def unequal_data(tmp_path_factory) -> Path:
    """Three classes with 10, 6 and 3 training pictures, 2 validation and 2 test pictures each."""
    root = make_image_folder(tmp_path_factory.mktemp("unequal") / "colours", CLASSES, 10, 2)
    for name, count in TRAIN_COUNTS.items():
        for path in sorted((root / "train" / name).iterdir())[count:]:
            path.unlink()
    for index, name in enumerate(CLASSES):
        folder = root / "test" / name
        folder.mkdir(parents=True)
        for picture in range(2):
            make_picture(name, 9000 + 10 * index + picture).save(folder / f"{name}_test_{picture}.png")
    return root


@pytest.fixture(scope="module")
def grid(unequal_data, random_weights_dir, tmp_path_factory):
    """A small real experiment, saved: frozen and scratch x seeds 0, 1 x 2 and all pictures per class."""
    runs_dir = tmp_path_factory.mktemp("grid-runs")
    plan = make_plan("grid", unequal_data, ["frozen", "scratch"], [0, 1], [2, None])
    trained: list[list[str]] = []  # the training pictures each cell's train() was given, in the grid's order

    real_train = Trainer.train

    def recording_train(trainer, scan, *args, **kwargs):
        trained.append(train_names(scan))
        return real_train(trainer, scan, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "train", recording_train)
        run_grid(plan, unequal_data, runs_dir, random_weights_dir)
    return plan, runs_dir, dict(zip(plan.grid(), trained))


# ---------------------------------------------------------------- 1. subsets

def test_a_subset_is_stratified_and_keeps_what_a_class_has(unequal_data):
    scan = scan_dataset(unequal_data)
    assert {name: len(files) for name, files in per_class(scan).items()} == TRAIN_COUNTS
    for seed in (0, 1, 7):
        for size, expected in ((5, {"blue": 5, "green": 5, "red": 3}), (1, {"blue": 1, "green": 1, "red": 1}),
                               (100, TRAIN_COUNTS)):
            chosen = subset(scan, size, seed)
            assert {name: len(files) for name, files in per_class(chosen).items()} == expected
            assert chosen.counts()["train"] == expected


def test_a_seeds_smaller_subsets_lie_inside_its_larger_ones(unequal_data):
    scan = scan_dataset(unequal_data)
    everything = set(train_names(scan))
    for seed in (0, 1, 2, 3):
        one, two, five = (set(train_names(subset(scan, size, seed))) for size in (1, 2, 5))
        assert one < two < five < everything
        assert set(train_names(subset(scan, None, seed))) == everything


def test_a_subset_is_drawn_by_its_seed_alone(unequal_data):
    scan = scan_dataset(unequal_data)
    first = train_names(subset(scan, 2, 0))
    assert train_names(subset(scan, 2, 0)) == first
    assert train_names(subset(scan_dataset(unequal_data), 2, 0)) == first  # a fresh scan of the same folder
    others = [train_names(subset(scan, 2, seed)) for seed in range(1, 6)]
    assert any(set(other) != set(first) for other in others)


def test_a_subset_keeps_every_evaluation_picture_and_the_data_sets_order(unequal_data):
    scan = scan_dataset(unequal_data)
    assert scan.has_test
    for size in (1, 2, 5, None):
        chosen = subset(scan, size, 3)
        assert chosen.samples["val"] == scan.samples["val"] and chosen.samples["test"] == scan.samples["test"]
        kept = set(chosen.samples["train"])
        assert chosen.samples["train"] == [sample for sample in scan.samples["train"] if sample in kept]
        assert chosen.classes == scan.classes
    assert subset(scan, None, 3).samples["train"] == scan.samples["train"]


def test_every_scenario_gets_the_same_training_pictures(grid, unequal_data):
    plan, runs_dir, trained = grid
    scan = scan_dataset(unequal_data)
    runs = [run for run in list_runs(runs_dir).runs if run.experiment and run.experiment.experiment == "grid"]
    assert len(runs) == 8 and all(run.status == "completed" for run in runs)
    by_cell = {(run.scenario, run.config.seed, run.experiment.pictures_per_class): run for run in runs}
    assert len(by_cell) == 8
    for seed in (0, 1):
        for size in (2, None):
            frozen, scratch = by_cell["frozen", seed, size], by_cell["scratch", seed, size]
            drawn = subset(scan, size, seed)
            # what each scenario was trained on, and what its saved run says it was trained on
            assert trained[Cell("frozen", seed, size, backbone=MOBILENET)] == trained[
                Cell("scratch", seed, size, backbone=MOBILENET)] == train_names(drawn)
            if size is None:
                assert frozen.experiment.train_files is None and scratch.experiment.train_files is None
                assert frozen.dataset.counts["train"] == scratch.dataset.counts["train"] == TRAIN_COUNTS
            else:
                assert frozen.experiment.train_files == scratch.experiment.train_files == train_names(drawn)
                assert frozen.dataset.counts["train"] == scratch.dataset.counts["train"] == {n: 2 for n in CLASSES}
            for run in (frozen, scratch):
                assert run.dataset.counts["val"] == run.dataset.counts["test"] == {n: 2 for n in CLASSES}
            assert frozen.experiment.shared_features and not scratch.experiment.shared_features
    assert by_cell["frozen", 0, 2].experiment.train_files != by_cell["frozen", 1, 2].experiment.train_files


# ---------------------------------------------------------------- 2. features computed once

def test_a_frozen_backbone_sees_each_picture_once_per_experiment(tmp_path, tiny_dataset, random_weights_dir,
                                                                 backbone_passes):
    calls, seen = backbone_passes
    runs_dir = tmp_path / "runs"
    plan = make_plan("features", tiny_dataset, ["frozen", "scratch"], [0, 1, 2], [1, 4, None], cached_views=2)
    runner = ExperimentRunner(plan, scan_dataset(tiny_dataset), runs_dir, random_weights_dir)
    frozen_cells = [cell for cell in plan.grid() if cell.scenario == "frozen"]
    assert len(frozen_cells) == 9
    for cell in frozen_cells:
        runner.save(cell, runner.train_cell(cell))
    assert sum(len(batch) for batch in seen) == 2 * 16 + 8  # cached_views x training pictures + validation pictures
    assert len(calls) == 1 and runner.feature_passes == 1
    runs = list_runs(runs_dir).runs
    assert len(runs) == 9
    assert all(run.experiment.shared_features and run.status == "completed" and len(run.history) == 1
               for run in runs)
    assert {run.dataset.total("train") for run in runs} == {2, 8, 16}

    calls.clear()
    seen.clear()
    scratch = runner.train_cell(Cell("scratch", 0, 1, backbone=MOBILENET))
    # its backbone trains, so nothing is cached: only its evaluation folds it, and sees the validation pictures
    assert scratch.status == "completed" and len(calls) == 1 and sum(len(batch) for batch in seen) == 8
    assert runner.feature_passes == 1 and not runner.shares_features(Cell("scratch", 0, 1, backbone=MOBILENET))


def test_the_shared_views_do_not_depend_on_what_ran_before(tiny_dataset, random_weights_dir, backbone_passes):
    _, seen = backbone_passes
    plan = make_plan("views", tiny_dataset, ["frozen"], [0], [1], cached_views=2)
    pictures = []
    for earlier_work in (5, 6):  # e.g. other cells trained before, or the time estimate's probe
        torch.manual_seed(earlier_work)
        seen.clear()
        ExperimentRunner(plan, scan_dataset(tiny_dataset), None, random_weights_dir).train_cell(plan.grid()[0])
        pictures.append(torch.cat(seen))
    assert torch.equal(pictures[0], pictures[1])


# ---------------------------------------------------------------- 3, 4, 5. the command line

EXPERIMENT_NAME = "kill-test"


def experiment_args(data, weights, runs, *extra):
    return ["experiment", "--scenario", "frozen", "--scenario", "scratch", "--seeds", "0", "1", "--sizes", "1",
            "all", "--epochs", "2", "--backbone", "mobilenet_v2", "--workers", "0", "--device", "cpu",
            "--data", data, "--weights", weights, "--runs-dir", runs, "--name", EXPERIMENT_NAME, *extra]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, tiny_dataset, random_weights_dir):
    """The experiment's command line killed with SIGKILL once two cells were saved, then run again."""
    folder = tmp_path_factory.mktemp("killed")
    runs = folder / "runs"
    env = cli_env(STUDIO_NETGUARD_LOG=str(folder / "network.log"), TORCH_HOME=str(folder / "torch-home"))
    args = [str(a) for a in experiment_args(tiny_dataset, random_weights_dir, runs)]
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "core", *args], stdout=out, stderr=err, cwd=PROJECT,
                                   env=env)
        deadline = time.monotonic() + 240
        while len(run_folders(runs)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        killed = process.poll() is None
        if killed:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    before = run_folders(runs)
    resumed = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=PROJECT,
                             env=env, timeout=300)
    network = (folder / "network.log").read_text() if (folder / "network.log").exists() else ""
    return {"killed": killed, "code": process.returncode, "first_stdout": (folder / "stdout").read_text(),
            "before": before, "resumed": resumed, "runs": runs, "env": env, "network": network}


def test_a_killed_experiment_resumes_without_retraining_its_saved_cells(killed_and_resumed):
    state = killed_and_resumed
    assert state["killed"] and state["code"] == -signal.SIGKILL, state["first_stdout"]
    assert 2 <= len(state["before"]) < 8, "the first run was not stopped midway: make the grid bigger"
    resumed = state["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr and not state["network"]
    saved = re.search(rf"Experiment {EXPERIMENT_NAME}: 8 cells, (\d+) already saved; (\d+) to train", resumed.stdout)
    assert saved, resumed.stdout
    already, todo = int(saved[1]), int(saved[2])
    assert already >= len(state["before"]) and already + todo == 8 and todo >= 1

    listing = list_runs(state["runs"])
    assert not listing.damaged
    cells = defaultdict(list)
    for run in listing.runs:
        assert run.experiment.experiment == EXPERIMENT_NAME
        cells[run.scenario, run.config.seed, run.experiment.pictures_per_class].append(run)
    expected = {(scenario, seed, size) for scenario in ("frozen", "scratch") for seed in (0, 1) for size in (1, None)}
    assert set(cells) == expected
    assert all(len(runs) == 1 and runs[0].status == "completed" and len(runs[0].history) == 2
               for runs in cells.values())
    assert state["before"] <= {run.id for run in listing.runs}  # the cells saved before the kill were kept
    assert run_folders(state["runs"]) == {run.id for run in listing.runs}


def experiment_table(stdout: str) -> str:
    """The experiment's summary as print_experiment writes it: from its first line to the end."""
    start = stdout.index(f"\nExperiment {EXPERIMENT_NAME}: 8 of 8 cells saved.")
    return stdout[start:]


def test_the_experiments_table_and_paired_differences(killed_and_resumed):
    stdout = killed_and_resumed["resumed"].stdout
    lines = experiment_table(stdout).strip().splitlines()
    header = lines.index(next(line for line in lines if "best val acc (optimistic)" in line))
    assert lines[header].split()[:3] == ["scenario", "per", "class"]
    end = next(i for i, line in enumerate(lines) if line.startswith("Means over seeds"))
    rows = lines[header + 2:end]  # after the header's dashes
    assert len(rows) == 4 and all("[" in row and "]" in row for row in rows)
    assert sorted((row.split()[0], row.split()[1]) for row in rows) == [
        ("frozen", "1"), ("frozen", "all"), ("scratch", "1"), ("scratch", "all")]
    assert all(row.split()[3] == "2" for row in rows)  # seeds

    paired = lines[lines.index("Paired differences (bootstrap over seeds and pictures):") + 1:]
    assert [line.split(":")[0].strip() for line in paired] == ["1 per class", "all per class"]
    for line in paired:
        assert "is ahead of" in line or "not distinguishable with 8 validation pictures and 2 seeds" in line


def test_show_prints_the_same_table_without_training(killed_and_resumed):
    state = killed_and_resumed
    before = run_folders(state["runs"])
    shown = cli("experiment", "--show", "--name", EXPERIMENT_NAME, "--runs-dir", state["runs"], env=state["env"])
    assert shown.returncode == 0, shown.stderr
    assert experiment_table(shown.stdout) == experiment_table(state["resumed"].stdout)
    assert "to train" not in shown.stdout and run_folders(state["runs"]) == before


@pytest.mark.parametrize("change, named", [(["--lr", "0.01"], "lr"), (["--epochs", "3"], "epochs")])
def test_a_name_reused_with_another_recipe_is_refused(killed_and_resumed, tiny_dataset, random_weights_dir, change,
                                                      named):
    state = killed_and_resumed
    before = run_folders(state["runs"])
    plan_file = state["runs"] / EXPERIMENTS_FOLDER / f"{EXPERIMENT_NAME}.json"
    recorded = plan_file.read_text()
    args = experiment_args(tiny_dataset, random_weights_dir, state["runs"])
    if change[0] == "--epochs":
        args[args.index("--epochs") + 1] = change[1]
    else:
        args += change
    refused = cli(*args, env=state["env"])
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert f"another {named};" in refused.stderr and "another name" in refused.stderr
    assert EXPERIMENT_NAME in refused.stderr
    assert run_folders(state["runs"]) == before and plan_file.read_text() == recorded


@pytest.mark.parametrize("size", ["0", "lots"])
def test_a_bad_size_is_refused_in_one_line(tmp_path, tiny_dataset, size):
    refused = cli("experiment", "--sizes", "1", size, "--backbone", "mobilenet_v2", "--data", tiny_dataset,
                  "--runs-dir", tmp_path / "runs")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error:") and size in refused.stderr
    assert not run_folders(tmp_path / "runs")


# ---------------------------------------------------------------- 6, 7. results and repeats

# Validation pictures right (of 6) per (scenario, seed, size): the trained runs, on random weights, are mostly at
# chance alike, so their accuracies are set here to differ between seeds.
CORRECT = {("frozen", 0, 2): 2, ("frozen", 1, 2): 5, ("frozen", 0, None): 4, ("frozen", 1, None): 6,
           ("scratch", 0, 2): 1, ("scratch", 1, 2): 3, ("scratch", 0, None): 3, ("scratch", 1, None): 2}


def with_accuracy(run, correct: int):
    """`run` as if its kept weights had got the first `correct` validation pictures right and the others wrong."""
    labels = run.val_predictions.labels
    predicted = [label if i < correct else (label + 1) % len(run.class_names) for i, label in enumerate(labels)]
    return replace(run, val_predictions=replace(run.val_predictions, predictions=predicted),
                   best_val_acc=correct / len(labels))


def test_results_are_means_over_seeds_with_paired_comparisons(grid):
    plan, runs_dir, _ = grid
    runs = [with_accuracy(run, CORRECT[run.scenario, run.config.seed, run.experiment.pictures_per_class])
            for run in list_runs(runs_dir).runs]
    outcome = results(plan, runs)
    assert outcome.done == 8 and len(outcome.rows) == 4
    for row in outcome.rows:
        chosen = [run for run in runs if run.scenario == row.scenario
                  and run.experiment.pictures_per_class == row.pictures_per_class]
        assert sorted(row.seeds) == sorted(run.config.seed for run in chosen) == [0, 1]
        expected = statistics.mean(CORRECT[row.scenario, seed, row.pictures_per_class] / 6 for seed in (0, 1))
        assert row.best_val.value == pytest.approx(statistics.mean(run.best_val_acc for run in chosen))
        assert row.best_val.value == pytest.approx(expected)
        assert row.best_val.low < row.best_val.value < row.best_val.high and row.best_val.n == 2
        assert row.train_pictures == (2 if row.pictures_per_class == 2 else sum(TRAIN_COUNTS.values()) / 3)
        assert row.test is not None  # the data set has test/
    assert sorted((c.pictures_per_class or 0, c.first, c.second, c.seeds) for c in outcome.comparisons) == [
        (0, "frozen", "scratch", 2), (2, "frozen", "scratch", 2)]
    assert all(c.split == "test" and c.pictures == 6 for c in outcome.comparisons)

    one_seed = results(make_plan("grid", plan.data_dir, ["frozen", "scratch"], [0], [2, None]), runs)
    assert len(one_seed.rows) == 4 and len(one_seed.comparisons) == 2
    for row in one_seed.rows:
        assert row.seeds == [0] and row.best_val.n == 1
        point = CORRECT[row.scenario, 0, row.pictures_per_class] / 6
        assert row.best_val.value == row.best_val.low == row.best_val.high == pytest.approx(point)

    # Where the scenarios share no seed at a size, there is nothing to pair at that size.
    unpaired = [run for run in runs if not (run.scenario == "scratch" and run.experiment.pictures_per_class == 2)]
    assert [c.pictures_per_class for c in results(plan, unpaired).comparisons] == [None]
    crossed = [run for run in runs if (run.scenario, run.config.seed) != ("scratch", 0)
               and (run.scenario, run.config.seed) != ("frozen", 1)]
    assert results(plan, crossed).comparisons == []


def test_repeats_group_the_runs_that_differ_by_their_seed_only(grid):
    _, runs_dir, _ = grid
    runs = list_runs(runs_dir).runs
    other_lr = replace(runs[0], id="other-lr", config=replace(runs[0].config, lr=0.5))
    groups = repeats([*runs, other_lr])
    assert len(groups) == 5 and sorted(len(group) for group in groups) == [1, 2, 2, 2, 2]
    assert [other_lr] in groups
    for group in groups:
        if other_lr in group:
            continue
        assert sorted(run.config.seed for run in group) == [0, 1]
        assert len({(run.scenario, run.experiment.pictures_per_class) for run in group}) == 1


def test_the_estimate_times_a_frozen_backbones_features_as_they_are_computed(tiny_dataset, monkeypatch):
    """At 2,000 pictures the estimate added one picture's decoding, timed alone, to a forward pass timed at batch 4,
    and said twice the time the features took (decoded on threads while the backbone runs). They are now timed on a
    few of the data set's pictures, computed as the run computes them, the first batch left out as warm-up."""
    scan = scan_dataset(tiny_dataset)
    recipe = TrainConfig(backbone="mobilenet_v2", scenario="frozen", epochs=1, device="cpu", workers=0)
    plan = ExperimentPlan("estimate", str(scan.root), recipe, ["frozen"], [0], [None])
    estimates = {}
    for per_batch in (0.0, 0.05):
        def features(trainer, sample, built, per_batch=per_batch):
            total = sum(trainer.feature_batches(sample).values())
            time.sleep(1.0)  # the first batch waits for the model and the threads: not counted
            for batch in range(1, total + 1):
                time.sleep(per_batch)
                trainer.callbacks.on_batch(BatchProgress(0, 1, "features", batch, total))
        monkeypatch.setattr(core.experiment.Trainer, "cache_features", features)
        core.experiment._features_seconds.cache_clear()
        estimates[per_batch] = estimate_seconds(plan, scan, plan.grid(), []).seconds
    batches = sum(Trainer(recipe).feature_batches(scan).values())
    assert estimates[0.05] - estimates[0.0] == pytest.approx(0.05 * batches, rel=0.25)


# ---------------------------------------------------------------- recipes as a dimension of the grid

def test_each_recipe_pairs_with_the_scenarios_it_can_train(tiny_dataset):
    configs = recipe_configs({"backbone": "mobilenet_v2", "device": "cpu"}, ["tutorial", "fine-tune", "lp-ft"],
                             ["frozen", "finetune"])
    plan = ExperimentPlan("recipes", str(tiny_dataset), configs["tutorial"], ["frozen", "finetune"], [0], [None],
                          recipes=configs)
    assert plan.pairs() == [(MOBILENET, "frozen", "tutorial"), (MOBILENET, "finetune", "tutorial"),
                            (MOBILENET, "finetune", "fine-tune"), (MOBILENET, "finetune", "lp-ft")]
    assert (configs["tutorial"].epochs, configs["fine-tune"].epochs, configs["fine-tune"].optimizer) == (25, 5, "adamw")
    assert plan.config(Cell("finetune", 3, None, "lp-ft", MOBILENET)).recipe == "lp-ft"
    name = default_name(tiny_dataset, list(configs.values()))
    assert name.startswith("colours-mobilenet_v2-tutorial-fine-tune-lp-ft-") and replace(plan, name=name)
    again = ExperimentPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.cells() == plan.cells() and again.recipes == plan.recipes
    with pytest.raises(ConfigError, match="fine-tune recipe .*needs a scenario that trains the backbone"):
        recipe_configs({}, ["fine-tune"], ["frozen"])


def test_an_experiment_saved_before_recipes_loads_as_the_tutorials_and_keeps_its_name(tiny_dataset):
    config = recipe(epochs=3)
    old_settings = {name: value for name, value in recipe_settings(config, scenario=False).items()
                    if name not in RECIPE_KNOBS}  # what recipe_settings held before recipes had knobs
    digest = hashlib.sha256(json.dumps([str(tiny_dataset.resolve()), old_settings], sort_keys=True).encode())
    assert default_name(tiny_dataset, [config]) == f"colours-mobilenet_v2-3ep-{digest.hexdigest()[:6]}"
    old = {"format": 1, "name": "old", "data_dir": str(tiny_dataset), "excluded": [],
           "recipe": {key: value for key, value in config.to_dict().items() if key not in RECIPE_KNOBS},
           "cells": [["frozen", 0, None], ["frozen", 1, None]]}
    plan = ExperimentPlan.from_dict(old)
    assert plan.cells() == [Cell("frozen", 0, None, "tutorial", MOBILENET), Cell("frozen", 1, None, "tutorial",
                                                                                 MOBILENET)]
    assert list(plan.recipes) == ["tutorial"] and not plan.several_recipes


def test_recipes_compared_on_the_grid_get_paired_verdicts_and_share_the_features(tmp_path, tiny_dataset,
                                                                                random_weights_dir):
    configs = recipe_configs({"backbone": "resnet18", "device": "cpu", "workers": 0, "epochs": 2, "compile": "off"},
                             ["tutorial", "lp-ft"], ["frozen", "finetune"])
    plan = ExperimentPlan("two-recipes", str(tiny_dataset), configs["tutorial"], ["frozen", "finetune"], [0, 1],
                          [None], recipes=configs)
    runner = run_grid(plan, tiny_dataset, tmp_path, random_weights_dir)
    assert runner.feature_passes == 1  # frozen's epochs and lp-ft's probe: one computation of the features
    outcome = results(plan, list_runs(tmp_path).runs)
    assert outcome.arms() == ["finetune · tutorial", "finetune · lp-ft", "frozen · tutorial"]
    assert [row.scenario for row in outcome.rows] == outcome.arms()
    assert {(c.first, c.second) for c in outcome.comparisons} == {
        ("finetune · tutorial", "finetune · lp-ft"), ("finetune · tutorial", "frozen · tutorial"),
        ("finetune · lp-ft", "frozen · tutorial")}
    lp_ft = outcome.runs_of("finetune · lp-ft", None)
    assert [run.config.recipe for run in lp_ft] == ["lp-ft", "lp-ft"] and lp_ft[0].experiment.shared_features
    assert [phase.name for phase in lp_ft[0].phase_records()] == ["probe", "finetune"]


# ---------------------------------------------------------------- backbones as a dimension of the grid

def test_backbones_compared_on_the_grid_share_each_ones_features_and_get_paired_verdicts(tmp_path, tiny_dataset,
                                                                                         random_weights_dir):
    plan = ExperimentPlan("two-backbones", str(tiny_dataset), recipe(), ["frozen"], [0, 1, 2], [2, None],
                          backbones=[MOBILENET, "resnet18"])
    assert [cell.backbone for cell in plan.grid()] == [MOBILENET] * 6 + ["resnet18"] * 6
    runner = run_grid(plan, tiny_dataset, tmp_path, random_weights_dir)
    assert runner.feature_passes == 2  # once per backbone, for all its cells
    outcome = results(plan, list_runs(tmp_path).runs)
    assert outcome.arms() == ["mobilenet_v2 · frozen", "resnet18 · frozen"]
    assert {run.backbone for run in outcome.runs_of("resnet18 · frozen", None)} == {"resnet18"}
    assert {(row.scenario, row.backbone, row.parameters) for row in outcome.rows if row.pictures_per_class is None} == {
        ("mobilenet_v2 · frozen", MOBILENET, 2_226_434), ("resnet18 · frozen", "resnet18", 11_177_538)}
    assert [(c.pictures_per_class, c.first, c.second, c.seeds) for c in outcome.comparisons] == [
        (2, "mobilenet_v2 · frozen", "resnet18 · frozen", 3), (None, "mobilenet_v2 · frozen", "resnet18 · frozen", 3)]
    for row in outcome.rows:  # a run's cost on its own includes its backbone's shared features, computed once
        runs = outcome.runs_of(row.scenario, row.pictures_per_class)
        (features_seconds,) = {run.experiment.features_seconds for run in runs}
        assert features_seconds > 0 and row.seconds == pytest.approx(
            sum(run.seconds for run in runs) / len(runs) + features_seconds)
    for cost in ("seconds", "parameters"):  # the best trade-offs: none other more accurate at no more cost
        front = outcome.trade_offs(None, cost)
        rows = [row for row in outcome.rows if row.pictures_per_class is None]
        assert front and all(not any(other.best_val.value > row.best_val.value and getattr(other, cost) <=
                                     getattr(row, cost) for other in rows) for row in front)
        assert [row for row in rows if row not in front] == [row for row in rows if any(
            other.best_val.value > row.best_val.value and getattr(other, cost) <= getattr(row, cost)
            for other in rows)]
    again = ExperimentPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.cells() == plan.cells() and again.several_backbones and results(again, list_runs(tmp_path).runs)\
        .arms() == outcome.arms()


def test_a_backbone_added_to_an_experiment_keeps_its_cells_and_names_stay(tmp_path, tiny_dataset):
    one = ExperimentPlan("grow", str(tiny_dataset), recipe(), ["frozen"], [0], [None])
    assert one.cells() == [Cell("frozen", 0, None, "tutorial", MOBILENET)] and not one.several_backbones
    record_plan(one, tmp_path)
    merged = record_plan(replace(one, backbones=["resnet18"], extra_cells=[]), tmp_path)
    assert merged.cells() == [Cell("frozen", 0, None, "tutorial", "resnet18"),
                              Cell("frozen", 0, None, "tutorial", MOBILENET)] and merged.several_backbones
    assert default_name(tiny_dataset, [recipe()], backbones=[MOBILENET]) == default_name(tiny_dataset, [recipe()])
    several = default_name(tiny_dataset, [recipe()], backbones=[MOBILENET, "resnet18"])
    assert several.startswith("colours-2backbones-1ep-") and several != default_name(
        tiny_dataset, [recipe()], backbones=[MOBILENET, "efficientnet_b0"])
    assert len(default_name(tiny_dataset.parent / ("x" * 60), [recipe(recipe=name, scenario="finetune") for name in
                                                                ("tutorial", "fine-tune", "lp-ft")])) <= 80


def test_a_recipe_a_backbone_cannot_train_is_left_out_of_its_cells(tiny_dataset):
    configs = recipe_configs({"backbone": MOBILENET, "device": "cpu"}, ["tutorial", "lp-ft"], ["finetune"])
    plan = ExperimentPlan("squeeze", str(tiny_dataset), configs["tutorial"], ["finetune"], [0], [None],
                          recipes=configs, backbones=[MOBILENET, "squeezenet1_1"])
    assert plan.pairs() == [(MOBILENET, "finetune", "tutorial"), (MOBILENET, "finetune", "lp-ft"),
                            ("squeezenet1_1", "finetune", "tutorial")]  # squeezenet has no last linear layer
    with pytest.raises(ConfigError, match="no-such-net"):
        ExperimentPlan("bad", str(tiny_dataset), recipe(), ["frozen"], [0], [None], backbones=["no-such-net"])


def test_the_estimate_times_each_backbone_on_itself(tiny_dataset, monkeypatch):
    scan = scan_dataset(tiny_dataset)
    timed = []
    real_probe = core.experiment._probe.__wrapped__

    @functools.cache  # as the real one is: once per process
    def probe(backbone, device):
        timed.append(backbone)
        return real_probe(backbone, device)

    monkeypatch.setattr(core.experiment, "_probe", probe)
    monkeypatch.setattr(core.experiment, "_features_seconds", lambda settings, *_: (
        {MOBILENET: 0.01, "mnasnet0_5": 0.5}[settings[0]], 0.0))
    finetune = recipe(scenario="finetune")
    alone = ExperimentPlan("one", str(scan.root), finetune, ["frozen", "finetune"], [0], [None])
    both = ExperimentPlan("two", str(scan.root), finetune, ["frozen", "finetune"], [0], [None],
                          backbones=[MOBILENET, "mnasnet0_5"])
    mobilenet = estimate_seconds(alone, scan, alone.grid(), [])
    together = estimate_seconds(both, scan, both.grid(), [])
    assert set(timed) == {MOBILENET, "mnasnet0_5"} and "each backbone" in together.basis
    assert together.cells == 4 and together.seconds > mobilenet.seconds + 0.5 * len(scan.samples["train"])


def test_a_backbone_whose_head_is_a_convolution_gets_an_estimate(tiny_dataset):
    """SqueezeNet's head is a 1x1 convolution, never trained alone on cached features: the estimate before Start
    times what its runs do, instead of failing on the head it never times."""
    configs = [recipe(backbone="squeezenet1_1", scenario=scenario) for scenario in ("frozen", "finetune")]
    estimate = estimate_training(configs, scan_dataset(tiny_dataset), [])
    assert estimate.cells == 2 and estimate.seconds > 0


def test_the_command_line_compares_backbones_and_shows_their_trade_offs(tmp_path, tiny_dataset, random_weights_dir):
    runs = tmp_path / "runs"
    args = ["experiment", "--backbone", MOBILENET, "--backbone", "resnet18", "--scenario", "frozen", "--seeds", "0",
            "1", "2", "--sizes", "all", "--epochs", "1", "--workers", "0", "--device", "cpu", "--data", tiny_dataset,
            "--weights", random_weights_dir, "--runs-dir", runs]
    trained = cli(*args)
    assert trained.returncode == 0, trained.stderr
    assert "6 cells, 0 already saved; 6 to train" in trained.stdout
    assert {run.backbone for run in list_runs(runs).runs} == {MOBILENET, "resnet18"}
    shown = cli(*args, "--show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.endswith(trained.stdout[trained.stdout.rindex("\nExperiment "):])
    assert re.search(r"backbone · scenario .* s / run +params \(M\)", shown.stdout)
    assert re.search(r"resnet18 · frozen +all \(8\) +3 .* 11\.2\n", shown.stdout)
    assert re.search(r"all per class, by parameters: mobilenet_v2 · frozen", shown.stdout)
    assert "all per class: " in shown.stdout and "mobilenet_v2 · frozen" in shown.stdout.split("Paired")[1]
