"""Reading a weights file: only tensors, one-line messages for what cannot be read, and the hash of the bytes loaded."""
import hashlib
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from core import models
from core.errors import WeightsError
from core.models import build_model


def save_resnet18(path: Path, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = models.BACKBONES["resnet18"].build().state_dict()
    torch.save(state, path)
    return state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_text(path: Path) -> None:
    path.write_text("hello")  # torch says "invalid load key" or (101) about it


def make_empty(path: Path) -> None:
    path.write_bytes(b"")


def make_folder(path: Path) -> None:
    path.mkdir()


def make_truncated(path: Path) -> None:
    save_resnet18(path, seed=0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def make_pickled_module(path: Path) -> None:
    torch.save(nn.Linear(2, 2), path)  # a whole module: loading it would run code named in the file


BAD_FILES = {
    "text": (make_text, "is not a PyTorch weights file (torch.save did not write it)"),
    "empty": (make_empty, "is empty (0 bytes), not a weights file"),
    "folder": (make_folder, "is a folder, not a weights file"),
    "truncated": (make_truncated, "is a damaged or incomplete PyTorch file"),
    "unsafe": (make_pickled_module, "is not a plain weights file: it holds Python objects besides tensors, so it "
                                    "will not be loaded"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_file_that_cannot_be_loaded_is_one_line_of_our_own(kind, tmp_path):
    make, expected = BAD_FILES[kind]
    folder = tmp_path / "weights"
    folder.mkdir()
    path = folder / "resnet18.pth"  # found by the folder lookup even when it is itself a folder
    make(path)
    with pytest.raises(WeightsError) as error:
        build_model("resnet18", "finetune", 2, weights=folder)
    message = str(error.value)
    assert message.startswith(f"{path} {expected}")
    assert "\n" not in message and "weights_only" not in message and "(101)" not in message
    assert "PytorchStreamReader" not in message and error.value.setting == "weights"


@pytest.mark.parametrize("kind", BAD_FILES)
def test_read_state_dict_gives_the_same_messages(kind, tmp_path):
    make, expected = BAD_FILES[kind]
    make(tmp_path / "model.pt")
    with pytest.raises(WeightsError) as error:
        models.read_state_dict(tmp_path / "model.pt")
    assert str(error.value).startswith(f"{tmp_path / 'model.pt'} {expected}")


def test_read_state_dict_returns_the_tensors_and_the_hash_of_the_file(tmp_path):
    state = save_resnet18(tmp_path / "model.pt", seed=1)
    loaded, digest = models.read_state_dict(tmp_path / "model.pt")
    assert digest == sha256(tmp_path / "model.pt")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_read_state_dict_unwraps_a_state_dict_entry(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "checkpoint.pth")
    loaded, _ = models.read_state_dict(tmp_path / "checkpoint.pth")
    assert list(loaded) == ["w"] and torch.equal(loaded["w"], torch.ones(2))


def test_read_state_dict_refuses_a_file_without_tensors(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "not-weights.pth")
    with pytest.raises(WeightsError, match="does not hold a state_dict"):
        models.read_state_dict(tmp_path / "not-weights.pth")


def test_a_same_size_change_with_the_time_restored_gets_the_new_hash(tmp_path):
    path = tmp_path / "resnet18.pth"
    save_resnet18(path, seed=1)
    first = build_model("resnet18", "finetune", 2, weights=path).weights_source.sha256
    info = path.stat()
    (tmp_path / "other").mkdir()
    changed = save_resnet18(tmp_path / "other" / path.name, seed=2)
    assert (tmp_path / "other" / path.name).stat().st_size == info.st_size
    (tmp_path / "other" / path.name).replace(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    built = build_model("resnet18", "finetune", 2, weights=path)
    assert built.weights_source.sha256 == sha256(path) != first
    assert torch.equal(built.model.conv1.weight, changed["conv1.weight"])


def test_the_hash_is_of_the_bytes_that_were_loaded(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    save_resnet18(path, seed=1)
    loaded_bytes = sha256(path)
    load = torch.load

    def load_then_replace_the_file(*args, **kwargs):
        state = load(*args, **kwargs)
        save_resnet18(path, seed=2)  # the file changes on disk after it was read
        return state

    monkeypatch.setattr(torch, "load", load_then_replace_the_file)
    source = build_model("resnet18", "finetune", 2, weights=path).weights_source
    assert source.sha256 == loaded_bytes != sha256(path)
