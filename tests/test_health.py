"""Data health (core.health) and exclusion lists (core.exclusions), on generated sets where the truth is known:
planted duplicates, near-duplicates and flipped labels; class counts; the report kept beside the runs; pictures
left out of training, experiments and jobs; and the command line's data --health / --exclude / --keep-excluded."""
import hashlib
import json
import os
import shutil
import threading
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.health
from core.cli import main
from core.data import scan_dataset
from core.errors import ConfigError, RunError
from core.exclusions import (
    change_exclusions,
    exclusions_path,
    read_exclusions,
    training_scan,
    write_exclusions,
)
from core.experiment import ExperimentPlan, default_name, record_plan
from core.health import (
    NEAR_DUPLICATE,
    DuplicatePair,
    HealthReport,
    SimilarPairs,
    cached_health,
    check_health,
    count_warnings,
    label_issues,
    similar_pairs,
)
from core.jobs import JobRequest
from core.runs import dataset_dir, list_runs, read_run, save_run
from core.train import TrainConfig, train
from tests.conftest import make_image_folder, make_picture

CLASSES = ("ants", "bees")


# ---------------------------------------------------------------- helpers

def copy_real(source: Path, dest: Path, train: int, val: int) -> Path:
    """The first `train` and `val` pictures of each class of the real data set (sorted by name), copied."""
    for split, count in (("train", train), ("val", val)):
        for label in CLASSES:
            folder = dest / split / label
            folder.mkdir(parents=True)
            for picture in sorted((source / split / label).glob("*.jpg"))[:count]:
                shutil.copy2(picture, folder / picture.name)
    return dest


def resized_crop(picture: Path, target: Path, edge: float = 0.05, scale: float = 0.7) -> None:
    """A copy with `edge` of each side cropped off, resized to `scale`, saved again as JPEG."""
    with Image.open(picture) as image:
        width, height = image.size
        cropped = image.convert("RGB").crop((round(width * edge), round(height * edge),
                                             width - round(width * edge), height - round(height * edge)))
        cropped.resize((round(cropped.width * scale), round(cropped.height * scale))).save(target, quality=90)


def unbalanced_folder(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    for split, counts in (("train", train), ("val", val)):
        for label, count in counts.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                seed = zlib.crc32(f"{split}/{label}/{index}".encode())
                make_picture(label, seed).save(folder / f"{label}_{index}.png")
    return root


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its content."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def frozen_recipe(**changes) -> TrainConfig:
    return TrainConfig(**{"backbone": "mobilenet_v2", "scenario": "frozen", "epochs": 1, "device": "cpu",
                          "workers": 0, **changes})


# ---------------------------------------------------------------- class counts

def test_an_imbalanced_split_and_too_few_pictures_are_warned():
    warned = count_warnings({"train": {"blue": 40, "red": 8}, "val": {"blue": 5, "red": 4}})
    assert len(warned) == 3
    imbalance, few_train, few_val = warned
    assert imbalance.startswith("train/ is imbalanced") and "blue has 40" in imbalance and "5.0 times" in imbalance
    assert "red" in few_train and "fewer than 10" in few_train and "blue" not in few_train
    assert "val/" in few_val and "fewer than 5" in few_val and "red (4)" in few_val


def test_a_balanced_set_with_enough_pictures_is_not_warned():
    assert count_warnings({"train": {"blue": 10, "red": 12}, "val": {"blue": 5, "red": 5}}) == []
    assert count_warnings({"train": {"blue": 30, "red": 10}, "val": {"blue": 5, "red": 5}}) == []  # 3 times is fine


def test_the_check_warns_an_imbalanced_generated_set(tmp_path, random_weights_dir):
    data = unbalanced_folder(tmp_path / "data", {"blue": 40, "red": 8}, {"blue": 5, "red": 5})
    report = check_health(scan_dataset(data), tmp_path / "runs", random_weights_dir, "mobilenet_v2")
    assert report.counts == {"train": {"blue": 40, "red": 8}, "val": {"blue": 5, "red": 5}}
    assert report.pictures == 58
    assert any("train/ is imbalanced" in warning for warning in report.warnings)
    assert any("fewer than 10 pictures of red (8)" in warning for warning in report.warnings)
    assert not any(warning.startswith("val/") for warning in report.warnings)


def test_the_check_of_a_balanced_set_has_no_warning(tmp_path, random_weights_dir):
    data = make_image_folder(tmp_path / "data", train_per_class=10, val_per_class=5)
    report = check_health(scan_dataset(data), tmp_path / "runs", random_weights_dir, "mobilenet_v2")
    assert report.warnings == [] and report.exact_duplicates == [] and report.unavailable == ""
    assert report.backbone == "mobilenet_v2"


def call_on_a_thread_without_fork(monkeypatch, work):
    """work() on a thread other than the main one, as the dashboard's server runs a page, with os.fork refused: a
    forked child of a server whose other threads hold locks can wait for good. Returns what work() returned."""
    def refuse(*_):
        raise AssertionError("forked a process from a thread of a multi-threaded server")

    monkeypatch.setattr(os, "fork", refuse)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(value=work()), daemon=True)
    thread.start()
    thread.join(600)
    assert "value" in outcome, "the work raised or never ended (its traceback is above)"
    return outcome["value"]


def test_the_check_run_as_the_dashboard_runs_it_starts_no_forked_process(tmp_path, random_weights_dir, monkeypatch):
    """cleanlab's find_label_issues forked a pool of one process per core by default: inside the dashboard's server
    the child waited on a lock for good, and the check never ended."""
    data = make_image_folder(tmp_path / "data", train_per_class=10, val_per_class=5)
    report = call_on_a_thread_without_fork(
        monkeypatch, lambda: check_health(scan_dataset(data), tmp_path / "runs", random_weights_dir, "mobilenet_v2"))
    assert report.unavailable == "" and report.backbone == "mobilenet_v2"


# ---------------------------------------------------------------- duplicates

def test_an_exact_copy_in_val_is_found_across_splits(tmp_path, random_weights_dir):
    data = make_image_folder(tmp_path / "data", train_per_class=10, val_per_class=5)
    shutil.copy(data / "train/red/red_3.png", data / "val/red/another_name.png")
    report = check_health(scan_dataset(data), tmp_path / "runs", random_weights_dir, "mobilenet_v2")
    assert report.exact_duplicates == [DuplicatePair("train/red/red_3.png", "val/red/another_name.png", 1.0)]
    assert report.exact_duplicates[0].across_splits and not report.exact_duplicates[0].classes_differ
    assert all({pair.first, pair.second} != {"train/red/red_3.png", "val/red/another_name.png"}
               for pair in report.near_duplicates)  # listed once, as an exact duplicate
    assert "val/red/another_name.png" in report.flagged


def test_similar_pairs_lists_each_pair_once_most_similar_first():
    files = ["a", "b", "c", "d", "e", "f"]
    features = np.array([[1.0, 0.0, 0.0, 0.0],
                         [0.99, 0.14, 0.0, 0.0],  # a and b: 0.990
                         [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.96, 0.28, 0.0],  # c and d: 0.960
                         [0.0, 0.0, 0.0, 1.0],
                         [0.0, 0.0, 0.0, 3.0]])  # e and f: the same direction, exact duplicates
    exact = [DuplicatePair("e", "f", 1.0)]
    similar = similar_pairs(files, features, exact)
    near, others = similar.near, similar.others
    assert [(pair.first, pair.second) for pair in near] == [("a", "b"), ("c", "d")] and similar.count == 2
    assert near[0].similarity == pytest.approx(0.99, abs=1e-3) and near[1].similarity == pytest.approx(0.96, abs=1e-3)
    assert others and all(pair.similarity < NEAR_DUPLICATE for pair in others)
    assert [pair.similarity for pair in others] == sorted((pair.similarity for pair in others), reverse=True)
    assert {("b", "c")} <= {(pair.first, pair.second) for pair in others}  # 0.14: the most similar of the rest
    assert similar_pairs(["a"], features[:1], []) == SimilarPairs([], 0, [])


def test_every_near_duplicate_pair_is_counted_though_only_the_most_similar_are_listed(monkeypatch):
    monkeypatch.setattr(core.health, "MOST_PAIRS", 5)
    generator = np.random.default_rng(0)
    originals = generator.normal(size=(40, 64))
    copies = originals + generator.normal(scale=0.05, size=originals.shape)  # 40 planted pairs, ~0.999
    features = np.concatenate([originals, copies, generator.normal(size=(300, 64))])
    files = [f"f{i}" for i in range(len(features))]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    every = unit @ unit.T
    truth = sorted(((every[i, j], i, j) for i in range(len(files)) for j in range(i + 1, len(files))
                    if every[i, j] >= NEAR_DUPLICATE), reverse=True)
    for block in (7, 64, 1000):  # the blocks change nothing but the memory
        similar = similar_pairs(files, features, [], block=block)
        assert similar.count == len(truth) == 40  # 200 before: the count was cut at the pairs listed
        assert [(pair.first, pair.second) for pair in similar.near] == [(files[i], files[j]) for _, i, j in truth[:5]]
        assert similar.others[0].similarity < NEAR_DUPLICATE


def test_the_report_says_how_many_pairs_there_are_and_how_many_it_lists(capsys):
    from core.cli import print_health
    listed = [DuplicatePair(f"train/a/{i}.jpg", f"val/a/{i}.jpg" if i < 2 else f"train/b/{i}.jpg", 0.99)
              for i in range(5)]
    report = HealthReport("data", "", ["a", "b"], {}, [], [], listed, [], "mobilenet_v2", near_duplicate_pairs=1234)
    print_health(report)
    assert (f"Near-duplicates (feature similarity at least {NEAR_DUPLICATE}): 1,234 pairs; the 5 most similar are "
            "listed, 2 of them across splits") in capsys.readouterr().out
    assert replace(report, near_duplicate_pairs=5).near_duplicates_text() == "5 pairs, 2 across splits"


def test_three_copies_of_one_picture_are_not_also_near_duplicates():
    files = ["train/x/a.png", "val/x/b.png", "val/x/c.png", "train/x/d.png"]
    features = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    exact = [DuplicatePair(files[0], files[1], 1.0), DuplicatePair(files[0], files[2], 1.0)]
    similar = similar_pairs(files, features, exact)
    assert similar.near == [] and similar.count == 0  # b and c are the same bytes: exact duplicates, not near ones


@pytest.mark.real_data
def test_planted_copies_of_real_pictures_are_found_and_distinct_pictures_are_not(real_inputs, tmp_path):
    source, weights = real_inputs
    data = copy_real(source, tmp_path / "data", train=12, val=6)
    ant, bee = sorted((data / "train/ants").glob("*.jpg"))[0], sorted((data / "train/bees").glob("*.jpg"))[3]
    shutil.copy(ant, data / "val/ants/copied.jpg")  # the same bytes under another name
    resized_crop(ant, data / "val/ants/ant_resized.jpg")
    resized_crop(bee, data / "val/bees/bee_resized.jpg")

    report = check_health(scan_dataset(data), tmp_path / "runs", weights, "mobilenet_v2")
    assert report.unavailable == "" and report.backbone == "mobilenet_v2"
    assert [(p.first, p.second) for p in report.exact_duplicates] == [(f"train/ants/{ant.name}", "val/ants/copied.jpg")]
    assert report.exact_duplicates[0].across_splits
    near = {frozenset((pair.first, pair.second)): pair for pair in report.near_duplicates}
    for original, copy in ((f"train/ants/{ant.name}", "val/ants/ant_resized.jpg"),
                           (f"train/bees/{bee.name}", "val/bees/bee_resized.jpg")):
        pair = near[frozenset((original, copy))]
        assert pair.across_splits and NEAR_DUPLICATE <= pair.similarity < 1.0
    planted = {"val/ants/copied.jpg", "val/ants/ant_resized.jpg", "val/bees/bee_resized.jpg"}
    # the only near pairs are the planted copies with their original (and the exact copy with the resized one)
    for pair in report.near_duplicates:
        assert {pair.first, pair.second} & planted, pair
    assert all(pair.similarity < NEAR_DUPLICATE for pair in report.most_similar)


# ---------------------------------------------------------------- label errors

def test_flipped_labels_of_separated_blobs_are_ranked_first_and_flagged():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 16) * 6.0 + 1.0
    labels = np.repeat(np.arange(3), 30)
    features = centres[labels] + rng.normal(0, 0.5, (len(labels), 16))
    flipped = [3, 40, 75]
    given = labels.copy()
    given[flipped] = [1, 2, 0]
    files = [f"train/c{label}/{index}.png" for index, label in enumerate(given)]
    issues, why_not = label_issues(files, given, features, ["c0", "c1", "c2"])
    assert why_not == ""
    assert {issue.file for issue in issues[:3]} == {files[index] for index in flipped}
    for issue in issues[:3]:
        index = files.index(issue.file)
        assert issue.flagged and issue.suggested == f"c{labels[index]}" and issue.given == f"c{given[index]}"
        assert issue.quality < 0.5
    assert [issue.quality for issue in issues] == sorted(issue.quality for issue in issues)


def test_the_label_check_needs_two_pictures_of_each_class():
    features = np.random.default_rng(0).normal(size=(6, 4))
    issues, why_not = label_issues([str(i) for i in range(6)], np.array([0, 0, 0, 0, 0, 1]), features, ["a", "b"])
    assert issues == [] and "at least 2 pictures of every class" in why_not


@pytest.mark.real_data
def test_real_pictures_moved_to_the_other_class_are_the_top_suspects(real_inputs, tmp_path):
    source, weights = real_inputs
    data = copy_real(source, tmp_path / "data", train=40, val=6)
    ants, bees = sorted((data / "train/ants").glob("*.jpg")), sorted((data / "train/bees").glob("*.jpg"))
    truth = {}
    for pictures, label, other in ((ants[2:30:10], "ants", "bees"), (bees[7:30:10], "bees", "ants")):
        for picture in pictures:
            picture.rename(data / "train" / other / picture.name)
            truth[f"train/{other}/{picture.name}"] = label
    assert len(truth) == 6

    report = check_health(scan_dataset(data), tmp_path / "runs", weights, "mobilenet_v2")
    assert report.unavailable == ""
    suspects = {issue.file: issue for issue in report.label_issues}
    for file, label in truth.items():  # every moved picture is a suspect, put back in its own class
        assert suspects[file].suggested == label and suspects[file].given != label, report.label_issues
    ranked = [issue.file for issue in report.label_issues]
    assert set(ranked[:4]) <= set(truth) and all(issue.flagged for issue in report.label_issues[:4]), ranked
    assert len(set(ranked[:6]) & set(truth)) >= 5, ranked  # most suspect first
    assert len(ranked) <= 12  # of 92 pictures: the others are left alone


# ---------------------------------------------------------------- the kept report

def test_the_report_is_kept_beside_the_runs_and_made_again_only_when_a_picture_changes(tmp_path, random_weights_dir,
                                                                                        monkeypatch):
    data = make_image_folder(tmp_path / "data", train_per_class=10, val_per_class=5)
    runs = tmp_path / "runs"
    calls = []
    original = core.health.imagenet_outputs
    monkeypatch.setattr(core.health, "imagenet_outputs", lambda *args, **kw: calls.append(1) or original(*args, **kw))

    first = check_health(scan_dataset(data), runs, random_weights_dir, "mobilenet_v2")
    kept = dataset_dir(data, runs) / "health-mobilenet_v2.json"
    assert kept.is_file() and json.loads(kept.read_text())["pictures"] == 30 and len(calls) == 1
    assert not any(path.name.startswith("health") for path in data.rglob("*"))  # nothing in the data set's folder

    again = check_health(scan_dataset(data), runs, random_weights_dir, "mobilenet_v2")
    assert len(calls) == 1 and again == first
    assert cached_health(scan_dataset(data), runs, "mobilenet_v2") == first

    make_picture("red", 99).save(data / "train/red/added.png")
    assert cached_health(scan_dataset(data), runs, "mobilenet_v2") is None
    added = check_health(scan_dataset(data), runs, random_weights_dir, "mobilenet_v2")
    assert len(calls) == 2 and added.pictures == 31

    make_picture("blue", 100).save(data / "train/red/added.png")  # the same name, another picture
    check_health(scan_dataset(data), runs, random_weights_dir, "mobilenet_v2")
    assert len(calls) == 3


def test_without_weights_the_report_still_has_counts_and_exact_duplicates(tmp_path, network_attempts):
    data = make_image_folder(tmp_path / "data", train_per_class=10, val_per_class=5)
    shutil.copy(data / "train/blue/blue_0.jpg", data / "val/blue/again.jpg")
    report = check_health(scan_dataset(data), tmp_path / "runs", backbone="mobilenet_v2")
    assert report.counts == {"train": {"blue": 10, "red": 10}, "val": {"blue": 6, "red": 5}}
    assert [(p.first, p.second) for p in report.exact_duplicates] == [("train/blue/blue_0.jpg", "val/blue/again.jpg")]
    assert report.backbone is None and report.near_duplicates == [] and report.label_issues == []
    assert "Near-duplicates and label errors were not checked" in report.unavailable
    assert "mobilenet" in report.unavailable.lower() or "weights" in report.unavailable.lower()


def test_a_picture_that_becomes_unreadable_is_skipped(tmp_path, random_weights_dir):
    data = make_image_folder(tmp_path / "data", train_per_class=10, val_per_class=5)
    scan = scan_dataset(data)
    (data / "val/red/red_1.png").write_bytes(b"\x89PNG damaged since the scan")
    (data / "train/blue/blue_2.jpg").unlink()
    report = check_health(scan, tmp_path / "runs", random_weights_dir, "mobilenet_v2")
    assert report.pictures == 30 and report.unavailable == "" and report.backbone == "mobilenet_v2"
    named = {file for pair in report.near_duplicates + report.most_similar for file in (pair.first, pair.second)}
    named |= {issue.file for issue in report.label_issues}
    assert not named & {"val/red/red_1.png", "train/blue/blue_2.jpg"}
    assert report.most_similar  # the rest was still compared


# ---------------------------------------------------------------- exclusion lists

def test_an_exclusion_list_is_kept_beside_the_runs_and_the_pictures_are_untouched(tmp_path, tiny_dataset):
    before = tree(tiny_dataset)
    runs = tmp_path / "runs"
    assert read_exclusions(tiny_dataset, runs) == []
    assert write_exclusions(tiny_dataset, ["val/red/red_2.jpg", "train/blue/blue_1.png", "val/red/red_2.jpg"],
                            runs) == ["train/blue/blue_1.png", "val/red/red_2.jpg"]
    assert exclusions_path(tiny_dataset, runs).parent == dataset_dir(tiny_dataset, runs)
    assert read_exclusions(tiny_dataset, runs) == ["train/blue/blue_1.png", "val/red/red_2.jpg"]
    assert change_exclusions(tiny_dataset, add=["train/red/red_0.jpg"], remove=["val/red/red_2.jpg"],
                             runs_dir=runs) == ["train/blue/blue_1.png", "train/red/red_0.jpg"]

    scan = training_scan(tiny_dataset, read_exclusions(tiny_dataset, runs))
    assert scan.ok and scan.counts()["train"] == {"blue": 7, "red": 7} and scan.counts()["val"] == {"blue": 4, "red": 4}
    assert sorted(scan.relative(path) for path in scan.excluded) == ["train/blue/blue_1.png", "train/red/red_0.jpg"]
    assert tree(tiny_dataset) == before  # nothing deleted, moved, changed or added in the data set's folder


def test_names_outside_the_data_set_are_refused(tmp_path, tiny_dataset):
    for name in ("../other/train/a.jpg", "train/../../x.jpg", str(tiny_dataset / "train/red/red_0.jpg")):
        with pytest.raises(ValueError, match="not a picture of the data set"):
            write_exclusions(tiny_dataset, [name], tmp_path / "runs")
    assert not exclusions_path(tiny_dataset, tmp_path / "runs").exists()


def test_names_the_data_set_does_not_hold_are_ignored(tiny_dataset):
    scan = scan_dataset(tiny_dataset).without(["train/red/nothing.jpg"])
    assert scan.ok and scan.excluded == [] and scan.counts() == scan_dataset(tiny_dataset).counts()


def test_excluding_every_picture_of_a_class_is_refused(tiny_dataset):
    scan = scan_dataset(tiny_dataset)
    every_red = [scan.relative(path) for path, label in scan.samples["val"] if scan.classes[label] == "red"]
    left = scan.without(every_red)
    assert not left.ok and "val/red" in " ".join(left.problems) and "keep at least one picture" in left.problems[0]
    with pytest.raises(Exception, match="leaves no picture in val/red"):
        left.raise_if_invalid()
    assert scan.ok  # the scan it came from is unchanged


@pytest.mark.parametrize("content", ["{not json", '{"excluded": "train/a.jpg"}', '["train/a.jpg"]',
                                     '{"excluded": [1, 2]}'])
def test_a_damaged_exclusion_list_says_what_to_do(tmp_path, tiny_dataset, content):
    path = exclusions_path(tiny_dataset, tmp_path / "runs")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(RunError, match="is damaged") as raised:
        read_exclusions(tiny_dataset, tmp_path / "runs")
    assert "Remove it" in str(raised.value) and "pictures are untouched" in str(raised.value)


def test_a_run_trained_without_excluded_pictures_records_them(tmp_path, tiny_dataset, random_weights_dir):
    before = tree(tiny_dataset)
    runs = tmp_path / "runs"
    write_exclusions(tiny_dataset, ["train/red/red_0.jpg", "val/blue/blue_1.png"], runs)
    scan = training_scan(tiny_dataset, read_exclusions(tiny_dataset, runs))
    record = save_run(train(frozen_recipe(), scan, random_weights_dir), scan, runs)
    for run in (record, read_run(record.path)):
        assert run.dataset.excluded == ["train/red/red_0.jpg", "val/blue/blue_1.png"]
        assert run.dataset.counts == {"train": {"blue": 8, "red": 7}, "val": {"blue": 3, "red": 4}}
        assert "val/blue/blue_1.png" not in run.val_predictions.files and len(run.val_predictions.files) == 7
    assert tree(tiny_dataset) == before
    assert [run.id for run in list_runs(runs).runs] == [record.id]  # the datasets folder is not a run


def test_an_experiment_with_other_excluded_pictures_under_the_same_name_is_refused(tmp_path, tiny_dataset):
    runs = tmp_path / "runs"

    def plan(excluded):
        return ExperimentPlan("colours", str(tiny_dataset), frozen_recipe(), ["frozen"], [0], [None],
                              excluded=excluded)

    record_plan(plan(["train/red/red_0.jpg"]), runs)
    record_plan(plan(["train/red/red_0.jpg"]), runs)  # the same pictures: resumed
    for other in ([], ["train/red/red_1.png"]):
        with pytest.raises(ConfigError, match="excluded pictures"):
            record_plan(plan(other), runs)
    assert default_name(tiny_dataset, [frozen_recipe()], ["train/red/red_0.jpg"]) != \
        default_name(tiny_dataset, [frozen_recipe()])


def test_a_job_with_excluded_pictures_trains_without_them(jobs, tmp_path, tiny_dataset, random_weights_dir):
    runs = tmp_path / "runs"
    jobs.start(JobRequest(data_dir=tiny_dataset, configs=[frozen_recipe()], runs_dir=runs, weights=random_weights_dir,
                          excluded=["train/blue/blue_3.png", "val/red/red_0.jpg"]))
    job = jobs.wait(120)
    assert job.state == "completed", job
    (run,) = list_runs(runs).runs
    assert run.dataset.excluded == ["train/blue/blue_3.png", "val/red/red_0.jpg"]
    assert run.dataset.counts["train"] == {"blue": 7, "red": 8} and "val/red/red_0.jpg" not in run.val_predictions.files


def test_a_job_that_would_leave_a_class_empty_fails_with_a_message(jobs, tmp_path, tiny_dataset, random_weights_dir):
    every_blue_val = [f"val/blue/blue_{index}{'.png' if index % 2 else '.jpg'}" for index in range(4)]
    jobs.start(JobRequest(data_dir=tiny_dataset, configs=[frozen_recipe()], runs_dir=tmp_path / "runs",
                          weights=random_weights_dir, excluded=every_blue_val))
    job = jobs.wait(60)
    assert job.state == "failed" and "val/blue" in job.message
    assert list_runs(tmp_path / "runs").runs == []


# ---------------------------------------------------------------- command line

def test_data_health_prints_duplicates_and_suspects(tmp_path, capsys, random_weights_dir):
    data = make_image_folder(tmp_path / "data", train_per_class=10, val_per_class=5)
    shutil.copy(data / "train/red/red_4.jpg", data / "val/red/red_copy.jpg")
    args = ["data", "--data", str(data), "--health", "--runs-dir", str(tmp_path / "runs"), "--weights",
            str(random_weights_dir), "--backbone", "mobilenet_v2", "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "Health of" in out and "31 pictures" in out and "MobileNet" in out
    assert "Exact duplicates (the same file content): 1 pair, 1 across splits" in out
    assert "train/red/red_4.jpg = val/red/red_copy.jpg (1.000; across splits)" in out
    assert f"Near-duplicates (feature similarity at least {NEAR_DUPLICATE})" in out
    assert "Label suspects:" in out and "Exclusion list: 0 picture(s)" in out
    assert (dataset_dir(data, tmp_path / "runs") / "health-mobilenet_v2.json").is_file()


def test_data_exclude_then_train_leaves_the_picture_out_unless_kept(tmp_path, capsys, tiny_dataset,
                                                                     random_weights_dir):
    runs = str(tmp_path / "runs")
    assert main(["data", "--data", str(tiny_dataset), "--exclude", "train/red/red_0.jpg", "--runs-dir", runs]) == 0
    out = capsys.readouterr().out
    assert "Exclusion list: 1 picture(s) left out of training:" in out and "  train/red/red_0.jpg" in out
    assert read_exclusions(tiny_dataset, tmp_path / "runs") == ["train/red/red_0.jpg"]

    train_args = ["train", "--scenario", "frozen", "--backbone", "mobilenet_v2", "--epochs", "1", "--workers", "0",
                  "--device", "cpu", "--data", str(tiny_dataset), "--weights", str(random_weights_dir),
                  "--runs-dir", runs]
    assert main(train_args) == 0
    out = capsys.readouterr().out
    assert "Left out 1 picture(s)" in out and "train 15, val 8 pictures" in out
    assert main([*train_args, "--keep-excluded"]) == 0
    out = capsys.readouterr().out
    assert "Left out" not in out and "train 16, val 8 pictures" in out
    excluded = sorted(len(run.dataset.excluded) for run in list_runs(tmp_path / "runs").runs)
    assert excluded == [0, 1]

    assert main(["data", "--data", str(tiny_dataset), "--include", "train/red/red_0.jpg", "--runs-dir", runs]) == 0
    assert "Exclusion list: 0 picture(s)" in capsys.readouterr().out
    assert read_exclusions(tiny_dataset, tmp_path / "runs") == []


def test_data_exclude_of_a_name_that_is_not_a_picture_exits_1(tmp_path, capsys, tiny_dataset):
    runs = tmp_path / "runs"
    assert main(["data", "--data", str(tiny_dataset), "--exclude", "train/red/no_such.jpg", "--runs-dir",
                 str(runs)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: train/red/no_such.jpg: not a picture of") and "as --health lists them" in err
    assert read_exclusions(tiny_dataset, runs) == []
