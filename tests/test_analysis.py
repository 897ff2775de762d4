"""Why a model is wrong (core.analysis): per-class metrics checked by hand, confusion cells, where two runs part
(with McNemar's test), the run's model on its validation pictures kept in its folder, top losses, feature maps, and
the command line's runs --show."""
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest

import core.analysis
from core.analysis import (
    ANALYSIS_FILE,
    cell_pictures,
    class_metrics,
    disagreements,
    feature_map,
    losses,
    run_outputs,
)
from core.cli import main
from core.runs import Predictions, read_run
from core.stats import mcnemar
from tests.conftest import copy_run

# ---------------------------------------------------------------- helpers

LABELS = [0, 0, 0, 1, 1, 2]
GUESSES = [0, 1, 0, 1, 1, 0]


def hand_predictions() -> Predictions:
    return Predictions([f"val/c{label}/{index}.png" for index, label in enumerate(LABELS)], LABELS, GUESSES)


def run_with(tiny_run, runs_dir, name, predictions=None, **changes):
    """A copy of tiny_run in runs_dir whose saved validation predictions are `predictions` (by file position)."""
    saved = tiny_run.val_predictions
    if predictions is not None:
        changes["val_predictions"] = {"files": saved.files, "labels": saved.labels, "predictions": predictions}
    return read_run(copy_run(tiny_run, runs_dir, name, **changes))


def wrong_at(tiny_run, positions) -> list[int]:
    """The true labels of tiny_run's validation pictures, with the other class at `positions`."""
    return [1 - label if index in positions else label for index, label in enumerate(tiny_run.val_predictions.labels)]


# ---------------------------------------------------------------- from the saved predictions

def test_per_class_metrics_match_the_ones_worked_out_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a class never predicted is not worth a warning
        metrics = class_metrics(hand_predictions(), ["c0", "c1", "c2"])
    expected = {  # (precision, recall, F1, support)
        "c0": (Fraction(2, 3), Fraction(2, 3), Fraction(2, 3), 3),  # predicted at 0, 2, 5; right at 0, 2
        "c1": (Fraction(2, 3), Fraction(1), Fraction(4, 5), 2),  # predicted at 1, 3, 4; right at 3, 4
        "c2": (Fraction(0), Fraction(0), Fraction(0), 1),  # never predicted: precision 0, not a warning
    }
    assert [m.name for m in metrics] == ["c0", "c1", "c2"]
    for m in metrics:
        precision, recall, f1, support = expected[m.name]
        assert m.precision == pytest.approx(float(precision)) and m.recall == pytest.approx(float(recall))
        assert m.f1 == pytest.approx(float(f1)) and m.support == support


def test_a_class_with_no_picture_in_val_is_listed_with_zeros():
    metrics = class_metrics(hand_predictions(), ["c0", "c1", "c2", "c3"])
    assert (metrics[3].name, metrics[3].support, metrics[3].precision, metrics[3].recall) == ("c3", 0, 0.0, 0.0)


def test_a_confusion_cell_lists_its_pictures(tiny_run, tmp_path):
    run = run_with(tiny_run, tmp_path / "runs", "cells", wrong_at(tiny_run, {0, 5}))
    files, labels = run.val_predictions.files, run.val_predictions.labels
    for actual in (0, 1):
        for predicted in (0, 1):
            expected = [(run.dataset.root / files[i]).resolve() for i in range(len(files))
                        if labels[i] == actual and (predicted != actual) == (i in {0, 5})]
            found = cell_pictures(run, actual, predicted)
            assert [picture.path for picture in found] == expected
            assert all((p.label, p.predicted) == (actual, predicted) for p in found)
    mistakes = cell_pictures(run, labels[0], 1 - labels[0]) + cell_pictures(run, labels[5], 1 - labels[5])
    assert sorted(p.path.name for p in mistakes) == sorted({files[0].split("/")[-1], files[5].split("/")[-1]})


def test_disagreements_count_who_alone_is_right(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    first = run_with(tiny_run, runs, "20990101-000000-frozen-mobilenet_v2-aaaa", wrong_at(tiny_run, {3, 4}))
    second = run_with(tiny_run, runs, "20990101-000001-frozen-mobilenet_v2-bbbb", wrong_at(tiny_run, {0, 1, 2, 4}))
    parted = disagreements(first, second)
    files = tiny_run.val_predictions.files
    assert parted.pictures == 8 and parted.both_wrong == 1  # picture 4
    assert [d.file for d in parted.first_only] == files[:3]  # the second is wrong on 0, 1, 2 alone
    assert [d.file for d in parted.second_only] == [files[3]]
    d = parted.second_only[0]
    assert d.label == tiny_run.val_predictions.labels[3] and d.first == 1 - d.label and d.second == d.label
    assert parted.p_value == pytest.approx(mcnemar(3, 1)) == pytest.approx(10 / 16)

    swapped = disagreements(second, first)
    assert len(swapped.first_only) == 1 and len(swapped.second_only) == 3 and swapped.p_value == parted.p_value


def test_runs_on_other_pictures_have_no_disagreements(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    run = run_with(tiny_run, runs, "same")
    elsewhere = run_with(tiny_run, runs, "elsewhere", dataset={"path": str(tmp_path / "other-data")})
    other_classes = run_with(tiny_run, runs, "classes", class_names=["cats", "dogs"])
    assert disagreements(run, elsewhere) is None and disagreements(run, other_classes) is None
    assert disagreements(run, run_with(tiny_run, runs, "copy")).pictures == 8


def test_mcnemar_p_values():
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(5, 5) == pytest.approx(1.0)
    assert mcnemar(10, 0) < 0.01 and mcnemar(10, 0) == pytest.approx(2 / 2**10)
    assert mcnemar(3, 1) == pytest.approx(10 / 16)  # P(X <= 1) + P(X >= 3) for X ~ Binomial(4, 1/2)
    assert mcnemar(7, 2) == mcnemar(2, 7) and mcnemar(7, 2) > mcnemar(9, 0)


# ---------------------------------------------------------------- from the run's model

def test_the_runs_model_on_its_validation_pictures_is_kept_in_its_folder(tiny_run, tmp_path, monkeypatch):
    run = run_with(tiny_run, tmp_path / "runs", tiny_run.id)
    outputs = run_outputs(run)
    saved = run.val_predictions
    assert outputs.files == saved.files and outputs.unreadable == []
    assert outputs.features.shape == (8, 1280) and outputs.logits.shape == (8, 2)
    assert outputs.logits.argmax(1).tolist() == saved.predictions
    assert outputs.probabilities.sum(1) == pytest.approx(np.ones(8), abs=1e-5)
    cache = run.path / ANALYSIS_FILE.format(split="val")
    assert cache.is_file() and not (tiny_run.path / cache.name).exists()

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded again")

    with monkeypatch.context() as patch:
        patch.setattr(core.analysis, "load_model", no_model)
        again = run_outputs(read_run(run.path))
    assert again.files == outputs.files and np.array_equal(again.logits, outputs.logits)

    cache.write_bytes(b"not a torch file")  # damaged: made again
    remade = run_outputs(run)
    assert np.allclose(remade.logits, outputs.logits, atol=1e-5) and remade.files == outputs.files


def test_top_losses_are_sorted_highest_first(tiny_run, tmp_path):
    run = run_with(tiny_run, tmp_path / "runs", tiny_run.id)
    outputs = run_outputs(run)
    found = losses(run, outputs)
    assert len(found) == 8 and [item.loss for item in found] == sorted((item.loss for item in found), reverse=True)
    probabilities = outputs.probabilities
    for item in found:
        row = outputs.files.index(item.file)
        assert item.label == run.val_predictions.labels[run.val_predictions.files.index(item.file)]
        assert item.loss == pytest.approx(-math.log(probabilities[row, item.label]), rel=1e-4)
        assert item.predicted == int(probabilities[row].argmax())
        assert item.probability == pytest.approx(float(probabilities[row].max()))


def test_feature_maps_in_two_dimensions():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 16)).astype(np.float32)
    for method in ("pca", "tsne"):
        mapped = feature_map(features, method)
        assert mapped.shape == (20, 2) and np.isfinite(mapped).all() and mapped.std(0).min() > 0
    assert feature_map(features[:5], "tsne").shape == (5, 2) and np.isfinite(feature_map(features[:5], "tsne")).all()
    for count in (0, 1, 2):
        assert feature_map(features[:count], "tsne").shape == (count, 2)
        assert feature_map(features[:count], "pca").shape == (count, 2)
    with pytest.raises(ValueError, match="Unknown map 'umap'"):
        feature_map(features, "umap")


def test_a_pca_map_keeps_separated_groups_apart():
    rng = np.random.default_rng(1)
    features = np.concatenate([rng.normal(0, 0.1, (10, 8)) + np.eye(8)[0], rng.normal(0, 0.1, (10, 8)) + np.eye(8)[1]])
    mapped = feature_map(features, "pca")
    first, second = mapped[:10].mean(0), mapped[10:].mean(0)
    spread = max(mapped[:10].std(0).max(), mapped[10:].std(0).max())
    assert np.linalg.norm(first - second) > 5 * spread


# ---------------------------------------------------------------- command line

def test_runs_show_puts_two_runs_side_by_side(tiny_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    first = run_with(tiny_run, runs, "20990101-000000-frozen-mobilenet_v2-aaaa", wrong_at(tiny_run, set()))
    second = run_with(tiny_run, runs, "20990101-000001-frozen-mobilenet_v2-bbbb", wrong_at(tiny_run, {0, 1, 2}))
    assert main(["runs", "--show", first.id, second.id, "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "Per class, on the validation pictures" in out and f"[1] {first.id}" in out and f"[2] {second.id}" in out
    assert "[1] P / R / F1" in out and "[2] P / R / F1" in out
    table = out[out.index("class"):out.index("confusion matrix")]
    assert table.count("1.000 / 1.000 / 1.000") == 2  # the first run is right on every picture of both classes
    assert "[1] confusion matrix" in out and "[2] confusion matrix" in out
    assert "Of 8 validation pictures, [1] alone is right on 3, [2] alone on 0, both are wrong on 0" in out
    assert f"McNemar's exact test: p = {mcnemar(3, 0):.3g}" in out
    files = tiny_run.val_predictions.files
    assert all(f"[1] alone right: {file}" in out for file in files[:3]) and "[2] alone right" not in out


def test_runs_show_of_runs_on_other_data_pairs_nothing(tiny_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    first = run_with(tiny_run, runs, "20990101-000000-frozen-mobilenet_v2-aaaa")
    other = run_with(tiny_run, runs, "20990101-000001-frozen-mobilenet_v2-bbbb",
                     dataset={"path": str(tmp_path / "other-data")})
    assert main(["runs", "--show", first.id, other.id, "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "[1] and [2] share no validation picture" in out and "McNemar" not in out
