"""Runs on disk: saved atomically, listed, loaded back; damaged folders never stop the others."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from core import staging
from core.data import scan_dataset
from core.errors import RunError, TrainingCancelled
from core.images import open_image
from core.predict import load_predictor
from core.presets import EVAL_TRANSFORM
from core.runs import (
    Predictions,
    RunRecord,
    check_runs_dir,
    default_runs,
    find_run,
    latest_run,
    list_runs,
    load_model,
    read_run,
    save_run,
)
from core.train import TrainConfig, train
from tests.conftest import UNTRAINED, copy_run


@pytest.fixture
def runs_dir(tmp_path, tiny_run):
    folder = tmp_path / "runs"
    shutil.copytree(tiny_run.path, folder / tiny_run.id)
    return folder


def test_a_saved_run_holds_everything_to_reuse_it(tiny_run):
    run = read_run(tiny_run.path)
    assert run.status == "completed" and run.scenario == "finetune" and run.backbone == "mobilenet_v2"
    assert run.class_names == ["blue", "red"]
    assert run.dataset.counts["train"] == {"blue": 8, "red": 8}
    assert len(run.history) == 2 and run.final.epoch == 2
    assert run.best_val_acc == max(e.val_acc for e in run.history)
    assert run.trainable_params == run.total_params > 2_000_000
    assert run.weights_source.kind == "file" and len(run.weights_source.sha256) == 64
    assert len(run.val_predictions.files) == len(run.val_predictions.predictions) == 8
    assert run.config == TrainConfig(**json.loads((tiny_run.path / "run.json").read_text())["config"])


def test_a_loaded_run_predicts_as_the_trained_model_did(tiny_run, tiny_dataset):
    predictor = load_predictor(read_run(tiny_run.path))
    files = tiny_run.val_predictions.files
    predicted = [tiny_run.class_names.index(predictor.predict(tiny_dataset / f).top_class) for f in files]
    assert predicted == tiny_run.val_predictions.predictions


def test_runs_are_listed_newest_first_and_found_by_id_prefix_or_latest(runs_dir, tiny_run):
    second = json.loads((runs_dir / tiny_run.id / "run.json").read_text())
    second.update(id="20990101-000000-frozen-mobilenet_v2-beef", created="2099-01-01T00:00:00+00:00")
    second["config"]["scenario"] = "frozen"
    shutil.copytree(runs_dir / tiny_run.id, runs_dir / second["id"])
    (runs_dir / second["id"] / "run.json").write_text(json.dumps(second))
    listing = list_runs(runs_dir)
    assert [r.id for r in listing.runs] == [second["id"], tiny_run.id] and not listing.damaged
    assert find_run("latest", runs_dir).id == second["id"]
    assert find_run("latest:finetune", runs_dir).id == tiny_run.id
    assert find_run(tiny_run.id[:20], runs_dir).id == tiny_run.id
    assert find_run(str(runs_dir / tiny_run.id)).id == tiny_run.id
    with pytest.raises(RunError, match="2 runs"):
        find_run("20", runs_dir)
    with pytest.raises(RunError, match="No run 'nothing-like-this'"):
        find_run("nothing-like-this", runs_dir)


@pytest.mark.parametrize("damage", ["bad json", "no weights", "no metadata", "wrong format", "bad weights"])
def test_a_damaged_run_is_reported_and_the_others_still_load(runs_dir, tiny_run, damage):
    broken = runs_dir / "20000101-000000-finetune-mobilenet_v2-dead"
    shutil.copytree(runs_dir / tiny_run.id, broken)
    if damage == "bad json":
        (broken / "run.json").write_text("{ half written")
    elif damage == "no weights":
        (broken / "model.pt").unlink()
    elif damage == "no metadata":
        (broken / "run.json").unlink()
    elif damage == "wrong format":
        (broken / "run.json").write_text(json.dumps({"format": 99}))
    else:
        (broken / "model.pt").write_bytes(bytes((broken / "model.pt").stat().st_size))  # same size, all zeros
    listing = list_runs(runs_dir)
    if damage == "bad weights":  # metadata is fine: the damage shows when the weights are loaded
        run = find_run(broken.name, runs_dir)
        with pytest.raises(RunError, match="cannot be loaded"):
            load_model(run)
    else:
        assert [d.path.name for d in listing.damaged] == [broken.name]
        assert [r.id for r in listing.runs] == [tiny_run.id]
    assert load_model(find_run(tiny_run.id, runs_dir)) is not None


def test_a_crash_while_saving_leaves_no_run_behind(tmp_path, tiny_dataset, random_weights_dir, monkeypatch):
    scan = scan_dataset(tiny_dataset)
    config = TrainConfig(backbone="mobilenet_v2", scenario="frozen", epochs=1, workers=0)
    result = train(config, scan, random_weights_dir)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(RunError, match="nothing was left half-written"):
        save_run(result, scan, tmp_path / "runs")
    assert list((tmp_path / "runs").iterdir()) == []
    assert list_runs(tmp_path / "runs").runs == []


def test_a_cancelled_run_is_saved_and_marked(tmp_path, tiny_dataset, random_weights_dir):
    scan = scan_dataset(tiny_dataset)

    def cancel(progress):
        if progress.epoch == 2:
            raise TrainingCancelled

    config = TrainConfig(backbone="mobilenet_v2", scenario="frozen", epochs=4, workers=0)
    record = save_run(train(config, scan, random_weights_dir, on_batch=cancel), scan, tmp_path / "runs")
    run = list_runs(tmp_path / "runs").runs[0]
    assert run.id == record.id and run.status == "cancelled" and len(run.history) == 1
    assert load_predictor(run).predict(next(iter(scan.samples["val"]))[0]).top_class in run.class_names


def test_no_runs_folder_means_no_runs(tmp_path):
    listing = list_runs(tmp_path / "missing")
    assert listing.runs == [] and listing.damaged == []


def test_run_json_keeps_its_format_and_old_files_load_typed(tiny_run):
    written = json.loads((tiny_run.path / "run.json").read_text())
    assert set(written["dataset"]) == {"path", "counts", "skipped", "excluded"} and written["dataset"]["excluded"] == []
    assert set(written["val_predictions"]) == {"files", "labels", "predictions"} and written["format"] == 1
    run = RunRecord.from_dict(written)
    assert run.dataset.total("train") == 16 and run.dataset.total("val") == 8 and run.dataset.skipped == []
    assert run.to_dict() == written  # what is read is what was written: format 1, unchanged
    cancelled = {**written, "val_predictions": {}, "history": [], "best_epoch": None, "status": "cancelled"}
    run = RunRecord.from_dict(cancelled)
    assert run.val_predictions is None and run.val_pictures() == [] and run.to_dict() == cancelled
    before_exclusions = {**written, "dataset": {k: v for k, v in written["dataset"].items() if k != "excluded"}}
    assert RunRecord.from_dict(before_exclusions).dataset.excluded == []


def test_a_run_saved_before_recipes_loads_as_the_tutorials_one_phase(tiny_run):
    written = json.loads((tiny_run.path / "run.json").read_text())
    assert written["config"]["recipe"] == "tutorial" and written["phases"][0]["name"] == "train"
    knobs = ("recipe", "optimizer", "schedule", "weight_decay", "label_smoothing", "head_epochs", "lr_spread")
    old = {**{key: value for key, value in written.items() if key != "phases"},
           "config": {key: value for key, value in written["config"].items() if key not in knobs},
           "history": [{key: value for key, value in epoch.items() if key not in ("phase", "rates")}
                       for epoch in written["history"]]}
    run = RunRecord.from_dict(old)
    assert (run.config.recipe, run.config.optimizer, run.config.schedule) == ("tutorial", "sgd", "step")
    assert run.phases is None and run.history[0].rates is None
    [phase] = run.phase_records()
    assert (phase.epochs, phase.optimizer, phase.schedule, phase.rates) == (2, "sgd", "step", {"all": run.config.lr})
    assert run.summary()["recipe"] == "tutorial"


def test_validation_predictions_list_mistakes_first_and_count_per_class(tmp_path):
    predictions = Predictions(files=["val/a/1.jpg", "val/a/2.jpg", "val/b/3.jpg", "val/b/4.jpg"],
                                 labels=[0, 0, 1, 1], predictions=[0, 1, 1, 0])
    assert predictions.mistakes == 2 and predictions.confusion(2) == [[1, 1], [1, 1]]
    pictures = predictions.pictures(tmp_path, mistakes_first=True)
    assert [(p.path.name, p.correct) for p in pictures] == [("2.jpg", False), ("4.jpg", False), ("1.jpg", True),
                                                           ("3.jpg", True)]
    assert pictures[0].path == tmp_path / "val/a/2.jpg" and (pictures[0].label, pictures[0].predicted) == (0, 1)


def test_one_summary_row_describes_a_run(tiny_run):
    row = read_run(tiny_run.path).summary()
    assert list(row)[:4] == ["run", "status", "scenario", "backbone"] and row["run"] == tiny_run.id
    assert row["epochs"] == "2/2" and row["best val acc"].endswith(f"(epoch {tiny_run.best_epoch})")
    assert row["trainable / total params"] == f"{tiny_run.total_params:,} / {tiny_run.total_params:,}"
    assert row["weights"].startswith("local file")


def test_the_latest_run_of_each_tutorial_scenario_is_the_default(tiny_run):
    def run(scenario, created):
        return RunRecord.from_dict({**tiny_run.to_dict(), "id": f"{created}-{scenario}", "created": created,
                                    "config": {**tiny_run.to_dict()["config"], "scenario": scenario}})

    newest_first = [run("scratch", "4"), run("frozen", "3"), run("finetune", "2"), run("frozen", "1")]
    assert latest_run(newest_first).id == "4-scratch" and latest_run(newest_first, "frozen").id == "3-frozen"
    assert latest_run(newest_first, "frozen-tutorial") is None
    assert [r.id for r in default_runs(newest_first)] == ["2-finetune", "3-frozen"]
    assert [r.id for r in default_runs(newest_first[:1])] == ["4-scratch"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")])
def test_a_failed_write_while_saving_is_one_line_and_leaves_nothing(tmp_path, tiny_run, monkeypatch, failure):
    result = _result_of(tiny_run)

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(RunError, match="Could not save the run") as caught:
        save_run(result, scan_dataset(tiny_run.dataset.root), tmp_path / "runs")
    assert "\n" not in str(caught.value)
    assert list((tmp_path / "runs").iterdir()) == []


def _result_of(run):
    """A TrainResult equal to what produced `run`, to save it again."""
    from core.models import build_model
    from core.train import TrainResult

    built = build_model(run.backbone, "scratch", len(run.class_names))
    built.model.load_state_dict(load_model(run).state_dict())
    return TrainResult(run.config, built, run.class_names, "cpu", list(run.history), run.status, run.best_epoch,
                       run.best_val_acc, None, run.seconds)


def test_the_runs_folder_is_synced_after_the_rename(tmp_path, tiny_run, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    record = save_run(_result_of(tiny_run), scan_dataset(tiny_run.dataset.root), tmp_path / "runs")
    assert (tmp_path / "runs").stat().st_ino in synced  # the new entry survives a power cut
    assert (record.path / "model.pt").stat().st_ino in synced and (record.path / "run.json").stat().st_ino in synced


def test_a_runs_folder_that_cannot_be_written_is_refused_before_training(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunError, match="nothing was trained"):
        check_runs_dir(tmp_path / "a-file")
    with pytest.raises(RunError, match="nothing was trained"):
        check_runs_dir(tmp_path / "a-file" / "runs")
    assert check_runs_dir(tmp_path / "new" / "runs", "mobilenet_v2").is_dir()
    assert list((tmp_path / "new" / "runs").iterdir()) == []  # the check leaves nothing behind


def test_a_runs_folder_without_room_for_the_weights_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(RunError, match=r"Only 1 MB are free .* a resnet18 run needs about \d+ MB"):
        check_runs_dir(tmp_path / "runs", "resnet18")


def _leftover(runs_dir, run, suffix, complete=True):
    """A staging folder as a save cut off by kill -9 leaves it: hidden, named after the run, unlocked."""
    folder = runs_dir / f".{run.id}.{suffix}"
    shutil.copytree(run.path, folder)
    if not complete:
        (folder / "run.json").unlink()
    return folder


def test_a_cut_off_save_is_recovered_when_complete_and_removed_when_not(runs_dir, tiny_run, tmp_path):
    other = RunRecord.from_dict({**tiny_run.to_dict(), "id": "x"}, path=tiny_run.path)
    other.id = "20300101-000000-frozen-mobilenet_v2-abcd"
    complete = _leftover(runs_dir, other, "k2m9x_ab")
    half = _leftover(runs_dir, other, "zz00zz00", complete=False)
    (runs_dir / ".write-check.q1w2e3r4").mkdir()
    (runs_dir / ".git").mkdir()  # hidden, but not ours: never touched
    (runs_dir / ".notes.abcdefgh").write_text("not a staging folder either")
    listing = list_runs(runs_dir)
    assert listing.recovered == [runs_dir / other.id] and not listing.damaged
    assert {run.id for run in listing.runs} == {tiny_run.id, other.id}
    assert not complete.exists() and not half.exists() and not (runs_dir / ".write-check.q1w2e3r4").exists()
    assert (runs_dir / ".git").is_dir() and (runs_dir / ".notes.abcdefgh").is_file()
    assert load_model(find_run(other.id, runs_dir)) is not None


def test_a_save_in_progress_is_never_touched(runs_dir, tiny_run):
    with staging.staging_folder(runs_dir, "20300101-000000-frozen-mobilenet_v2-abcd") as live:
        shutil.copytree(tiny_run.path, live, dirs_exist_ok=True)
        listing = list_runs(runs_dir)
        assert live.is_dir() and listing.recovered == [] and [r.id for r in listing.runs] == [tiny_run.id]


def _edit(runs_dir, run_id, change):
    path = runs_dir / run_id / "run.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", [
    lambda d: d["config"].update(backbone="lenet5"),
    lambda d: d.update(best_val_acc=None),
    lambda d: d.update(seconds=None),
    lambda d: d.update(created=5),
    lambda d: d.update(status="exploded"),
    lambda d: d.update(best_epoch=7),
    lambda d: d.update(class_names="ants"),
    lambda d: d["history"][0].update(val_loss="NaN"),
    lambda d: d["val_predictions"].update(labels=[5] * 8),
], ids=["unknown backbone", "null accuracy", "null seconds", "numeric date", "unknown status", "best epoch out of "
        "range", "class names not a list", "loss not a number", "class number out of range"])
def test_one_bad_run_json_never_breaks_the_others(runs_dir, tiny_run, tmp_path, damage):
    bad = "20000101-000000-finetune-mobilenet_v2-dead"
    shutil.copytree(runs_dir / tiny_run.id, runs_dir / bad)
    _edit(runs_dir, bad, damage)
    listing = list_runs(runs_dir)
    assert [d.path.name for d in listing.damaged] == [bad] and "is damaged" in listing.damaged[0].reason
    assert [r.id for r in listing.runs] == [tiny_run.id]
    assert find_run(tiny_run.id, runs_dir).id == tiny_run.id and find_run("latest", runs_dir).id == tiny_run.id


def test_bare_nan_in_run_json_is_damage(runs_dir, tiny_run):
    path = runs_dir / tiny_run.id / "run.json"
    path.write_text(path.read_text().replace(f'"best_val_acc": {tiny_run.best_val_acc}', '"best_val_acc": NaN', 1))
    assert "NaN" in path.read_text()
    [damaged] = list_runs(runs_dir).damaged
    assert "NaN is not a number JSON allows" in damaged.reason


def test_a_run_of_a_newer_format_says_so(runs_dir, tiny_run):
    _edit(runs_dir, tiny_run.id, lambda d: d.update(format=2))
    [damaged] = list_runs(runs_dir).damaged
    assert "newer version of the studio" in damaged.reason and "damaged" not in damaged.reason


def test_a_truncated_weights_file_is_damage(runs_dir, tiny_run):
    weights = runs_dir / tiny_run.id / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-1000])
    [damaged] = list_runs(runs_dir).damaged
    assert "model.pt is damaged" in damaged.reason and f"{tiny_run.weights_bytes:,} were saved" in damaged.reason


def test_paths_in_run_json_never_lead_outside_the_data_set(tmp_path):
    root = tmp_path / "data"
    (root / "val" / "a").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_text("")
    (root / "val" / "a" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    predictions = Predictions(files=["val/a/1.jpg", "/etc/passwd", "../secret.jpg", "val/../../secret.jpg",
                                        "val/a/link.jpg", "."], labels=[0] * 6, predictions=[0] * 6)
    assert [p.path for p in predictions.pictures(root)] == [(root / "val/a/1.jpg").resolve()]


def test_a_run_with_no_finished_epoch_is_never_the_latest_nor_loaded(runs_dir, tiny_run):
    untrained = copy_run(tiny_run, runs_dir, "20990101-000000-frozen-mobilenet_v2-0ep0", **UNTRAINED,
                         created="2099-01-01T00:00:00+00:00").name
    runs = list_runs(runs_dir).runs
    assert runs[0].id == untrained and not runs[0].trained  # listed, newest...
    assert find_run("latest", runs_dir).id == tiny_run.id  # ... but never the latest
    assert [r.id for r in default_runs(runs)] == [tiny_run.id]
    with pytest.raises(RunError, match="before its first epoch finished: its new last layer was never trained"):
        load_model(find_run(untrained, runs_dir))


def test_weights_with_nan_are_refused(runs_dir, tiny_run):
    run = find_run(tiny_run.id, runs_dir)
    state = torch.load(run.weights_path, weights_only=True)
    state["classifier.1.weight"][0, 0] = float("nan")
    torch.save(state, run.weights_path)
    _edit(runs_dir, run.id, lambda d: d.update(weights_bytes=run.weights_path.stat().st_size))
    with pytest.raises(RunError, match="NaN or infinite"):
        load_model(find_run(tiny_run.id, runs_dir))


def test_default_runs_all_come_from_the_newest_trained_runs_data_set(tiny_run):
    def run(scenario, created, data):
        record = RunRecord.from_dict({**tiny_run.to_dict(), "id": f"{created}-{scenario}", "created": created,
                                      "config": {**tiny_run.to_dict()["config"], "scenario": scenario}})
        record.dataset.path = data
        return record

    newest_first = [run("frozen", "4", "/data/abc"), run("finetune", "3", "/data/ants"),
                    run("frozen", "2", "/data/ants")]
    assert [r.id for r in default_runs(newest_first)] == ["4-frozen"]
    assert [r.id for r in default_runs(newest_first[1:])] == ["3-finetune", "2-frozen"]


def test_a_data_set_with_test_pictures_gives_every_run_its_test_accuracy(tmp_path, tiny_dataset, random_weights_dir):
    from tests.test_data import add_test_split

    data = add_test_split(Path(shutil.copytree(tiny_dataset, tmp_path / "with-test")), per_class=5)
    scan = scan_dataset(data)
    for scenario in ("frozen", "finetune"):  # cached features, and the whole network
        config = TrainConfig(backbone="mobilenet_v2", scenario=scenario, epochs=2, workers=0, device="cpu", lr=0.01)
        run = read_run(save_run(train(config, scan, random_weights_dir), scan, tmp_path / "runs").path)
        model = load_model(run)
        expected = [predicted for path, _ in scan.samples["test"]
                    for predicted in model(EVAL_TRANSFORM(open_image(path))[None]).argmax(1).tolist()]
        assert run.test_predictions.predictions == expected  # the kept (best-on-val) weights, on test/
        assert run.test_predictions.files[0] == "test/blue/blue_test_0.png"
        test = run.test()
        assert test.n == 10 and test.value == sum(p == label for p, (_, label) in zip(expected, scan.samples["test"])
                                                  ) / 10
        assert run.summary()["test acc"] == f"{test.value:.3f} [{test.low:.3f}, {test.high:.3f}]"


def test_accuracies_in_a_summary_carry_their_wilson_interval(tiny_run):
    row = read_run(tiny_run.path).summary()
    correct = 8 - tiny_run.val_predictions.mistakes
    low, high = wilson_by_hand(correct, 8)
    assert row["best val acc"] == f"{correct / 8:.3f} [{low:.3f}, {high:.3f}] (epoch {tiny_run.best_epoch})"
    assert row["test acc"] == "-"  # the generated set has no test/


def wilson_by_hand(correct: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * (share * (1 - share) / total + z * z / (4 * total * total)) ** 0.5
    return centre - half, centre + half


def test_experiment_cells_on_part_of_the_pictures_are_not_defaults(tiny_run):
    def run(created, pictures_per_class):
        data = {**tiny_run.to_dict(), "id": f"{created}-finetune", "created": created,
                "experiment": {"experiment": "e", "pictures_per_class": pictures_per_class}}
        return RunRecord.from_dict(data)

    newest_first = [run("3", 2), run("2", None), run("1", None)]
    assert [r.id for r in default_runs(newest_first)] == ["2-finetune"]  # a whole-set cell is a run like any
    assert [r.id for r in default_runs(newest_first[:1])] == ["3-finetune"]  # nothing else: better than nothing
