"""Runs on disk: saved atomically, listed, loaded back; damaged folders never stop the others."""
import json
import shutil

import pytest
import torch

from core.data import scan_dataset
from core.errors import RunError, TrainingCancelled
from core.predict import load_predictor
from core.runs import (
    RunRecord,
    ValPredictions,
    default_runs,
    find_run,
    latest_run,
    list_runs,
    load_model,
    read_run,
    save_run,
)
from core.train import TrainConfig, train


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
        (broken / "model.pt").write_bytes(b"not a checkpoint")
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
    assert set(written["dataset"]) == {"path", "counts", "skipped"}
    assert set(written["val_predictions"]) == {"files", "labels", "predictions"} and written["format"] == 1
    run = RunRecord.from_dict(written)
    assert run.dataset.total("train") == 16 and run.dataset.total("val") == 8 and run.dataset.skipped == []
    assert run.to_dict() == written  # what is read is what was written: format 1, unchanged
    cancelled = {**written, "val_predictions": {}, "history": [], "best_epoch": None, "status": "cancelled"}
    run = RunRecord.from_dict(cancelled)
    assert run.val_predictions is None and run.val_pictures() == [] and run.to_dict() == cancelled


def test_validation_predictions_list_mistakes_first_and_count_per_class(tmp_path):
    predictions = ValPredictions(files=["val/a/1.jpg", "val/a/2.jpg", "val/b/3.jpg", "val/b/4.jpg"],
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
