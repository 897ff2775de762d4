"""Bundles: ONNX, PyTorch's torch.export (.pt2) and legacy TorchScript, checked against PyTorch, usable without
this project."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core import export
from core.cli import parse_args
from core.errors import StudioError
from core.export import FORMATS, LEGACY_FORMATS, check_parity, export_run
from core.images import open_image
from core.models import build_architecture
from core.predict import load_predictor
from core.presets import EVAL_TRANSFORM
from core.runs import read_run
from core.staging import Lock

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """Each format's bundle of the tiny run, and the warnings its export let through to the user."""
    out = tmp_path_factory.mktemp("exports")
    results, shown = {}, {}
    for fmt in ("onnx", "pt2", "torchscript"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[fmt] = export_run(tiny_run, fmt, out)
        shown[fmt] = [f"{warning.category.__name__}: {warning.message}" for warning in caught]
    return results, shown


@pytest.fixture(scope="module")
def bundles(exported):
    return exported[0]


def test_pt2_is_offered_after_onnx_and_torchscript_only_as_legacy(capsys):
    assert list(FORMATS) == ["onnx", "pt2", "torchscript"] and FORMATS["pt2"] == "model.pt2"
    assert LEGACY_FORMATS == {"torchscript"}
    with pytest.raises(SystemExit):
        parse_args(["export", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "{onnx,pt2,torchscript}" in usage and "torch.export" in usage
    assert "torchscript (legacy: deprecated by PyTorch)" in usage


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_a_bundle_matches_pytorch_on_validation_pictures(bundles, fmt):
    result = bundles[fmt]
    assert result.pictures_checked == 8 and result.max_difference <= 1e-4
    with zipfile.ZipFile(result.path) as bundle:
        names = set(bundle.namelist())
        meta = json.loads(bundle.read("bundle.json"))
        card = bundle.read("MODEL_CARD.md").decode()
        stored = {info.filename: info.compress_type for info in bundle.infolist()}
    assert names == {meta["model"], "bundle.json", "MODEL_CARD.md"}
    # the weights as they are (deflating them took 19 s of VGG-11's export for 7%), the texts deflated
    assert stored == {meta["model"]: zipfile.ZIP_STORED, "bundle.json": zipfile.ZIP_DEFLATED,
                      "MODEL_CARD.md": zipfile.ZIP_DEFLATED}
    assert meta["classes"] == ["blue", "red"] and meta["preprocessing"]["center_crop"] == 224
    needed_lines = ("finetune", "MobileNetV2", "sha256", "Best", "Final", "| train | 8 | 8 | 16 |", "training time",
                    "on cpu")
    for needed in needed_lines:
        assert needed.lower() in card.lower(), needed
    assert meta["format"] == fmt and meta["model"] == FORMATS[fmt] and result.path.name.endswith(f"-{fmt}.zip")
    assert ("legacy" in card and "deprecated by PyTorch" in card) == (fmt in LEGACY_FORMATS)
    if fmt == "pt2":
        assert "torch.export.load(path).module()" in card


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_exporting_shows_no_deprecation_warning(exported, fmt):  # torch.jit's own warnings included
    _, shown = exported
    assert [line for line in shown[fmt] if "deprecat" in line.lower() or "torch.jit" in line] == []


def test_a_pt2_bundle_loads_with_torch_export_load_without_any_warning(bundles, tiny_run, tiny_dataset):
    pictures = [tiny_dataset / name for name in tiny_run.val_predictions.files[:3]]
    batch = torch.stack([EVAL_TRANSFORM(open_image(picture)) for picture in pictures])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with zipfile.ZipFile(bundles["pt2"].path) as bundle:
            model = torch.export.load(io.BytesIO(bundle.read("model.pt2"))).module()
        with torch.no_grad():
            one, three = model(batch[:1]), model(batch)  # the batch dimension is dynamic
    assert [str(warning.message) for warning in caught] == []
    predictor = load_predictor(tiny_run)
    for got, picture in zip(three.tolist(), pictures):
        assert got == pytest.approx(list(predictor.predict(picture).probabilities.values()), abs=1e-4)
    assert one[0].tolist() == pytest.approx(three[0].tolist(), abs=1e-5)


def test_a_torchscript_bundle_loads_with_plain_torch_jit_load(bundles, tiny_run, tiny_dataset):
    with zipfile.ZipFile(bundles["torchscript"].path) as bundle:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(io.BytesIO(bundle.read("model.torchscript.pt")))
    picture = tiny_dataset / tiny_run.val_predictions.files[0]
    expected = load_predictor(tiny_run).predict(picture).probabilities
    got = model(EVAL_TRANSFORM(open_image(picture)).unsqueeze(0))[0].tolist()
    assert got == pytest.approx(list(expected.values()), abs=1e-4)


@pytest.mark.parametrize("marker, fmt", [("bundle-example", "onnx"), ("pt2-example", "pt2")])
def test_the_readme_example_runs_without_this_project(bundles, tiny_run, tiny_dataset, tmp_path, marker, fmt):
    readme = (PROJECT / "README.md").read_text()
    code = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    shutil.copyfile(bundles[fmt].path, tmp_path / "bundle.zip")
    picture = tiny_dataset / tiny_run.val_predictions.files[-1]
    shutil.copyfile(picture, tmp_path / "photo.jpg")
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "tests/netguard")}
    isolated = subprocess.run([sys.executable, "-c", "import core"], cwd=tmp_path, env=env, capture_output=True)
    assert isolated.returncode != 0, "the project must not be importable there"
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "deprecat" not in result.stderr.lower(), result.stderr
    printed = eval(result.stdout.strip())  # a dict literal of class -> probability
    expected = load_predictor(tiny_run).predict(picture).probabilities
    assert printed == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])  # onnx: exported by `bundles`
def test_the_command_line_writes_a_checked_bundle(tiny_run, tmp_path, fmt):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ["PYTHONPATH"]])}
    result = subprocess.run([sys.executable, "-m", "core", "export", "--run", str(tiny_run.path), "--format", fmt,
                             "--out", str(tmp_path)], capture_output=True, text=True, cwd=PROJECT, env=env)
    assert result.returncode == 0, result.stderr
    assert "matches PyTorch on 8 validation pictures" in result.stdout
    assert "deprecat" not in result.stderr.lower(), result.stderr  # the legacy format's loader warns; not shown
    assert (tmp_path / f"{tiny_run.id}-{fmt}.zip").is_file()
    refused = subprocess.run([sys.executable, "-m", "core", "export", "--format", "pdf"], capture_output=True,
                             text=True, cwd=PROJECT, env=env)
    assert refused.returncode == 2 and "invalid choice: 'pdf'" in refused.stderr


# ---------------------------------------------------------------- faults: folders, leftovers, odd runs

def copy_run(run, folder: Path, edit=None, dataset: Path | None = None):
    """A copy of `run` in `folder` that a test may change: `edit` gets run.json's dict, `dataset` replaces its
    data set's folder."""
    copy = folder / "runs" / run.id
    shutil.copytree(run.path, copy)
    data = json.loads((copy / "run.json").read_text())
    if dataset is not None:
        data["dataset"]["path"] = str(dataset)
    if edit:
        edit(data)
    (copy / "run.json").write_text(json.dumps(data))
    return read_run(copy)


def test_a_folder_that_cannot_be_written_gives_one_line_and_leaves_nothing(tiny_run, tmp_path):
    out = tmp_path / "out"
    if os.geteuid() == 0:  # root writes into read-only folders: take a path that is a file instead
        out.write_text("not a folder")
    else:
        out.mkdir()
        out.chmod(0o555)
    before = sorted(tmp_path.rglob("*"))
    try:
        with pytest.raises(StudioError) as refused:
            export_run(tiny_run, "torchscript", out)
    finally:
        if out.is_dir():
            out.chmod(0o755)
    message = str(refused.value)
    assert "\n" not in message and str(out) in message and "another folder" in message
    assert sorted(tmp_path.rglob("*")) == before


FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path

import core.export as export
from core.errors import StudioError
from core.runs import read_run

build = export._export_model


def build_then_fill_the_disk(*args):
    build(*args)  # the model is built in a temporary folder: only the bundle's own writing meets the limit
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


export._export_model = build_then_fill_the_disk
out = Path(sys.argv[2])
try:
    export.export_run(read_run(Path(sys.argv[1])), "torchscript", out)
    print("written")
except StudioError as exc:
    print(exc)
print(json.dumps(sorted(path.name for path in out.iterdir())))
"""


def test_a_full_folder_gives_one_line_and_removes_the_partial_bundle(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ["PYTHONPATH"]])}
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tiny_run.path), str(out)], capture_output=True,
                            text=True, cwd=PROJECT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    message, left = result.stdout.strip().splitlines()
    assert str(out) in message and "free space" in message and "File too large" in message
    assert json.loads(left) == []


def test_two_exports_of_one_run_into_one_folder_both_succeed(tiny_run, tmp_path, monkeypatch):
    writestr, second = zipfile.ZipFile.writestr, []

    def write_and_export_again(bundle, *args, **kwargs):  # a second export runs while the first writes its zip
        if not second:
            second.append(None)
            second[0] = export_run(tiny_run, "torchscript", tmp_path)
        return writestr(bundle, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", write_and_export_again)
    first = export_run(tiny_run, "torchscript", tmp_path)
    assert first.path == second[0].path == tmp_path / f"{tiny_run.id}-torchscript.zip"
    with zipfile.ZipFile(first.path) as bundle:
        assert bundle.testzip() is None and "MODEL_CARD.md" in bundle.namelist()
    assert [path.name for path in tmp_path.iterdir() if "zip" in path.name] == [first.path.name]


def test_leftovers_of_dead_exports_are_removed_by_the_next_export(tiny_run, tmp_path):
    old_style = tmp_path / "20240101-000000-finetune-resnet18-abcd-onnx.zip.partial"  # older versions' name
    dead = tmp_path / f".{tiny_run.id}-onnx.zip.k3j4h5g6.partial"
    live = tmp_path / f".{tiny_run.id}-onnx.zip.a1b2c3d4.partial"
    recent_old_style = tmp_path / "20240101-000000-finetune-resnet18-abcd-torchscript.zip.partial"
    others = [tmp_path / "notes.zip.partial", tmp_path / ".notes.txt.a1b2c3d4.partial"]
    for path in (old_style, dead, live, recent_old_style, *others):
        path.write_bytes(b"half a zip")
    an_hour_ago = time.time() - 3700
    os.utime(old_style, (an_hour_ago, an_hour_ago))
    lock = Lock(live)  # a writer still at work
    try:
        export_run(tiny_run, "torchscript", tmp_path)
    finally:
        lock.close()
    assert not old_style.exists() and not dead.exists()
    assert live.exists() and recent_old_style.exists() and all(path.exists() for path in others)


def test_class_names_that_cannot_be_encoded_are_written_readably(tiny_run, tmp_path):
    names = ["blue\udcff", "réd 🐜"]  # a folder name of non-UTF-8 bytes, as Python reads it, and plain unicode

    def rename_classes(data):
        data["class_names"] = names
        data["dataset"]["counts"] = {split: dict(zip(names, per_class.values()))
                                     for split, per_class in data["dataset"]["counts"].items()}

    run = copy_run(tiny_run, tmp_path, rename_classes)
    result = export_run(run, "torchscript", tmp_path / "out")
    with zipfile.ZipFile(result.path) as bundle:
        assert json.loads(bundle.read("bundle.json"))["classes"] == names
        card = bundle.read("MODEL_CARD.md").decode("utf-8")
    assert "blue\\udcff, réd 🐜" in card and "| train | 8 | 8 | 16 |" in card


def test_pictures_changed_since_training_are_skipped_and_counted(tiny_run, tiny_dataset, tmp_path):
    data = shutil.copytree(tiny_dataset, tmp_path / "colours")
    blue = sorted((data / "val" / "blue").iterdir())
    blue[0].write_text("no longer a picture")
    blue[1].write_bytes(blue[1].read_bytes()[:100])  # truncated
    blue[2].unlink()
    run = copy_run(tiny_run, tmp_path, dataset=data)
    result = export_run(run, "torchscript", tmp_path / "out", check_pictures=4)
    assert result.pictures_checked == 4 and result.max_difference <= 1e-4
    assert [path.resolve() for path in result.skipped_pictures] == [path.resolve() for path in blue[:3]]


def test_parity_fails_on_nan_and_infinity():
    finite = np.array([[0.25, 0.75]], dtype=np.float32)
    assert check_parity(finite, finite + 1e-5, "a-run", "onnx") == pytest.approx(1e-5, abs=1e-6)
    for bad in (np.nan, np.inf, -np.inf):
        broken = np.array([[bad, 0.75]], dtype=np.float32)
        for expected, got in ((finite, broken), (broken, broken), (broken, finite)):
            with pytest.raises(StudioError, match="NaN or infinity"):
                check_parity(expected, got, "a-run", "onnx")
    with pytest.raises(StudioError, match="differs from PyTorch"):
        check_parity(finite, finite + 1e-3, "a-run", "onnx")


def load_even_non_finite_weights(run, device="cpu"):  # load_model may refuse these itself; the export must too
    model = build_architecture(run.backbone, len(run.class_names))
    model.load_state_dict(torch.load(run.weights_path, weights_only=True))
    return model.to(device).eval()


@pytest.mark.parametrize("pictures", ["found", "moved"])
def test_a_model_that_outputs_nan_is_not_written(tiny_run, tmp_path, monkeypatch, pictures):
    run = copy_run(tiny_run, tmp_path, dataset=None if pictures == "found" else tmp_path / "moved")
    state = torch.load(run.weights_path, weights_only=True)
    head = [name for name in state if name.endswith(".weight")][-1]
    state[head] = torch.full_like(state[head], float("nan"))
    torch.save(state, run.weights_path)
    monkeypatch.setattr(export, "load_model", load_even_non_finite_weights)
    with pytest.raises(StudioError) as refused:
        export_run(run, "torchscript", tmp_path / "out")
    assert "\n" not in str(refused.value) and "NaN or infinity" in str(refused.value)
    assert list((tmp_path / "out").glob("*")) == []


def test_paths_in_run_json_outside_the_data_set_are_not_read(tiny_run, tiny_dataset, tmp_path, monkeypatch):
    data = shutil.copytree(tiny_dataset, tmp_path / "data" / "colours")
    shutil.copyfile(data / "val" / "red" / "red_0.jpg", tmp_path / "outside.jpg")
    (data / "val" / "blue" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    read = []

    def recording_open_image(source, *args, **kwargs):
        read.append(Path(source))
        return open_image(source, *args, **kwargs)

    def add_outside_files(run_json):
        predictions = run_json["val_predictions"]
        predictions["files"] += ["/etc/passwd", "../../outside.jpg", "val/blue/link.jpg"]
        predictions["labels"] += [0, 0, 0]
        predictions["predictions"] += [0, 0, 0]

    run = copy_run(tiny_run, tmp_path, add_outside_files, dataset=data)
    monkeypatch.setattr(export, "open_image", recording_open_image)
    result = export_run(run, "torchscript", tmp_path / "out")
    assert result.pictures_checked == 8 and len(read) == 8
    assert all(path.resolve().is_relative_to(data.resolve()) and path.name != "link.jpg" for path in read)


def test_a_shared_servers_model_card_names_its_files_without_their_paths(tiny_run, tmp_path):
    result = export_run(read_run(tiny_run.path), "torchscript", tmp_path, paths=False)
    with zipfile.ZipFile(result.path) as bundle:
        card = bundle.read("MODEL_CARD.md").decode()
    assert tiny_run.dataset.path not in card and tiny_run.weights_source.path not in card
    assert f"Data set: `{tiny_run.dataset.root.name}`" in card and Path(tiny_run.weights_source.path).name in card
