"""Training on several processes with torchrun: real processes (2 on the CPU, gloo) on generated pictures."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core import distributed
from core.data import scan_dataset
from core.device import Compute
from core.distributed import World
from core.errors import ConfigError
from core.experiment import Cell, ExperimentPlan, share
from core.export import export_run
from core.results import Placement
from core.runs import list_runs, read_run
from core.strategy import Strategy
from core.train import TrainConfig, train
from tests.conftest import copy_run, make_image_folder

PROJECT = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find each process")


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """An easily separable set: 12 training and 6 validation pictures of each colour (odd counts per process)."""
    return make_image_folder(tmp_path_factory.mktemp("ddp") / "colours", train_per_class=12, val_per_class=6)


def torchrun(arguments: list[str], processes: int = 2, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*LAUNCH, str(processes), *arguments], cwd=PROJECT, text=True, **kwargs)


def core_train(colours: Path, weights: Path, runs: Path, *options: str, backbone: str = "mobilenet_v2") -> list[str]:
    return ["-m", "core", "train", "--data", str(colours), "--weights", str(weights), "--runs-dir", str(runs),
            "--backbone", backbone, "--device", "cpu", *options]


def finished(launcher: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = launcher.communicate(timeout=timeout)
    return launcher.returncode, out, err


def test_finetune_and_frozen_each_save_one_run_trained_on_two_processes(colours, random_weights_dir, tmp_path):
    code, out, err = finished(torchrun(core_train(colours, random_weights_dir, tmp_path / "runs", "--scenario", "both",
                                                  "--epochs", "2", "--lr", "0.01"), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE))
    assert code == 0, err[-3000:]
    runs = list_runs(tmp_path / "runs").runs
    assert sorted(run.scenario for run in runs) == ["finetune", "frozen"]
    assert out.count("Saved completed run") == 2  # process 0 alone prints and saves
    scan = scan_dataset(colours)
    for run in runs:
        placement = run.placement
        assert run.status == "completed" and len(run.history) == 2
        assert placement.processes == 2 and placement.backend == "gloo" and placement.devices == ["cpu", "cpu"]
        assert placement.per_process_batch == 2 and placement.lr_scaling.startswith("not scaled")
        # every validation picture once, in the data set's order, though each process evaluated half of them
        assert run.val_predictions.files == [str(path.relative_to(scan.root)) for path, _ in scan.samples["val"]]
        assert run.val_predictions.labels == [label for _, label in scan.samples["val"]]
    assert "2 processes" in runs[0].summary()["trained on"]
    bundle = export_run(runs[0], "onnx", tmp_path / "exports")  # an ordinary run: it exports, and matches PyTorch
    assert bundle.pictures_checked == 12 and bundle.max_difference < 1e-4


def test_a_recipe_with_a_head_phase_trains_on_two_processes_to_identical_weights(colours, random_weights_dir, tmp_path):
    """fine-tune: its head on the cached features, then the whole network, each wrapped for the processes in turn."""
    code, out, err = finished(torchrun(core_train(colours, random_weights_dir, tmp_path / "runs", "--scenario",
                                                  "finetune", "--recipe", "fine-tune", "--epochs", "2",
                                                  backbone="resnet18"), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code == 0, err[-3000:]  # the processes' weights are checked identical before the run is saved
    [run] = list_runs(tmp_path / "runs").runs
    assert run.status == "completed" and run.placement.processes == 2
    assert [epoch.phase for epoch in run.history] == ["head", "unfrozen"]


@pytest.fixture(scope="module")
def distributed_probe(colours, random_weights_dir, tmp_path_factory) -> tuple[dict, dict]:
    """What each of 2 processes reports from tests/distributed_probe.py."""
    out = tmp_path_factory.mktemp("probe")
    code, _, err = finished(torchrun(["-m", "tests.distributed_probe", str(colours), str(random_weights_dir),
                                      str(out)], stderr=subprocess.PIPE))
    assert code == 0, err[-3000:]
    return tuple(json.loads((out / f"rank-{rank}.json").read_text()) for rank in (0, 1))


def test_both_processes_end_with_identical_weights_and_a_difference_is_caught(distributed_probe):
    first, second = distributed_probe
    assert first["status"] == second["status"] == "completed"
    assert first["fingerprint"] == second["fingerprint"]  # every weight and buffer, bit for bit
    assert first["val_acc"] == second["val_acc"] and first["predictions"] == second["predictions"]
    assert "process 1 differs from process 0" in first["caught"] and first["caught"] == second["caught"]


def test_a_frozen_backbones_features_are_computed_once_in_all(distributed_probe, colours):
    first, second = distributed_probe
    assert first["frozen"]["status"] == second["frozen"]["status"] == "completed"
    views, train_pictures, val_pictures = 2, 24, 12
    assert first["frozen"]["pictures"] + second["frozen"]["pictures"] == views * train_pictures + val_pictures
    assert first["frozen"]["pictures"] == second["frozen"]["pictures"]  # half each


def test_two_processes_reach_the_accuracy_of_one(colours, random_weights_dir, tmp_path):
    command = core_train(colours, random_weights_dir, tmp_path / "runs", "--scenario", "finetune", "--epochs", "3",
                         backbone="resnet18")
    code, _, err = finished(torchrun(command, stderr=subprocess.PIPE))
    assert code == 0, err[-3000:]
    together = list_runs(tmp_path / "runs").runs[0]
    alone = train(TrainConfig(backbone="resnet18", scenario="finetune", epochs=3, device="cpu"),
                  scan_dataset(colours), random_weights_dir)
    assert alone.best_val_acc >= 0.9 and together.best_val_acc >= 0.9
    assert abs(together.best_val_acc - alone.best_val_acc) <= 1 / 12  # one picture of 12


def children(parent: int) -> dict[int, int]:
    """rank: pid of the processes that the launcher `parent` started."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                environment = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0")
                                   if "=" in item)
                found[int(environment["RANK"])] = int(entry.name)
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return found


def start_long_run(colours: Path, weights: Path, runs: Path, log: Path, **popen) -> subprocess.Popen:
    """A 200-epoch finetune run on 2 processes, returned once its first epoch finished."""
    launcher = torchrun(core_train(colours, weights, runs, "--scenario", "finetune", "--epochs", "200"),
                        stdout=subprocess.DEVNULL, stderr=log.open("w"), **popen)
    deadline = time.monotonic() + 120
    while "epoch 1 val acc" not in log.read_text():
        assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return launcher


def test_a_killed_process_makes_the_other_stop_with_a_clear_message(colours, random_weights_dir, tmp_path):
    log = tmp_path / "log.txt"
    launcher = start_long_run(colours, random_weights_dir, tmp_path / "runs", log)
    os.kill(children(launcher.pid)[1], signal.SIGKILL)
    killed = time.monotonic()
    launcher.wait(timeout=60)
    assert time.monotonic() - killed < 60 and launcher.returncode != 0
    text = log.read_text()
    assert "error: process 0 of 2" in text and "another process of the run stopped" in text, text[-3000:]
    run = list_runs(tmp_path / "runs").runs[0]  # process 0 kept what was trained
    assert run.status == "cancelled" and run.trained and "another process" in run.placement.interruption


def test_sigterm_to_the_launcher_saves_a_cancelled_run(colours, random_weights_dir, tmp_path):
    log = tmp_path / "log.txt"
    launcher = start_long_run(colours, random_weights_dir, tmp_path / "runs", log)
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=60)
    runs = list_runs(tmp_path / "runs").runs
    assert len(runs) == 1, log.read_text()[-3000:]
    assert runs[0].status == "cancelled" and 1 <= len(runs[0].history) < 200 and not runs[0].placement.interruption
    assert "SIGTERM: cancelling after this batch" in log.read_text()


@pytest.mark.parametrize("stop", ["Ctrl-C in the terminal", "SIGTERM to process 1 alone"])
def test_a_cancel_reaching_any_process_stops_both_and_saves_the_run(colours, random_weights_dir, tmp_path, stop):
    log = tmp_path / "log.txt"
    launcher = start_long_run(colours, random_weights_dir, tmp_path / "runs", log, start_new_session=True)
    if stop.startswith("Ctrl-C"):
        os.killpg(launcher.pid, signal.SIGINT)  # to torchrun and both processes; torchrun passes it on again
    else:
        os.kill(children(launcher.pid)[1], signal.SIGTERM)
    launcher.wait(timeout=60)
    runs = list_runs(tmp_path / "runs").runs
    assert len(runs) == 1 and runs[0].status == "cancelled" and runs[0].trained, log.read_text()[-3000:]
    assert not runs[0].placement.interruption and not re.search(r"\[rank\d\]: Traceback", log.read_text())


def test_an_experiment_split_over_two_processes_saves_every_cell_once_and_resumes(colours, random_weights_dir,
                                                                                   tmp_path):
    command = ["-m", "core", "experiment", "--scenario", "both", "--seeds", "0", "1", "--sizes", "2", "all",
               "--epochs", "1", "--data", str(colours), "--weights", str(random_weights_dir), "--runs-dir",
               str(tmp_path / "runs"), "--backbone", "mobilenet_v2", "--device", "cpu"]
    code, out, err = finished(torchrun(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code == 0, err[-3000:]
    runs = list_runs(tmp_path / "runs").runs
    cells = [(run.scenario, run.config.seed, run.experiment.pictures_per_class) for run in runs]
    assert sorted(cells, key=str) == sorted({(s, seed, size) for s in ("finetune", "frozen") for seed in (0, 1)
                                             for size in (2, None)}, key=str)  # 8 cells, each once
    assert "[process 0]" in out and "[process 1]" in err  # both trained cells
    assert "8 of 8 cells saved" in out
    code, out, err = finished(torchrun(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code == 0 and "8 already saved: nothing to train" in out, err[-3000:]
    assert len(list_runs(tmp_path / "runs").runs) == 8


# ---------------------------------------------------------------- in one process

def test_the_batch_is_the_global_batch_and_must_split_evenly():
    strategy = Strategy(Compute(torch.device("cpu")), World(rank=0, size=3, backend="gloo"))
    with pytest.raises(ConfigError, match="multiple of 3"):
        strategy.per_process_batch(4)
    assert strategy.per_process_batch(6) == 2


def test_experiment_cells_are_dealt_once_each_with_the_work_balanced(tiny_dataset):
    scan = scan_dataset(tiny_dataset)
    plan = ExperimentPlan("split", str(tiny_dataset), TrainConfig(backbone="mobilenet_v2", epochs=2),
                          ["finetune", "frozen"], [0, 1, 2], [1, None])
    dealt = share(plan, scan, plan.grid(), 2)
    assert sorted(map(str, (cell for mine in dealt for cell in mine))) == sorted(map(str, plan.grid()))  # each once
    biggest = [Cell("finetune", seed, None, backbone="mobilenet_v2") for seed in (0, 1, 2)]
    assert {sum(cell in mine for cell in biggest) for mine in dealt} == {1, 2}  # the heaviest cells are spread
    assert all(mine == [cell for cell in plan.grid() if cell in mine] for mine in dealt)  # in the grid's order


def test_a_run_trained_elsewhere_reads_with_its_hosts_and_devices(tiny_run, tmp_path):
    placement = Placement(["gpu-a"] * 4 + ["gpu-b"] * 4, [f"cuda:{i} (NVIDIA H100)" for i in range(4)] * 2, "nccl", 8,
                          "not scaled")
    folder = copy_run(tiny_run, tmp_path, tiny_run.id, placement=placement.to_dict(),
                      dataset={"path": "/data/on/another/machine"})
    run = read_run(folder)
    assert run.placement == placement
    assert run.summary()["trained on"] == "8 processes · 2 hosts · 8 × cuda (nccl)"
    assert "process 5: gpu-b, cuda:1 (NVIDIA H100)" in run.placement.describe()
    older = copy_run(tiny_run, tmp_path, "older", placement=None)
    assert read_run(older).summary()["trained on"] == "-"


def test_one_process_alone_joins_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world = distributed.start("cpu")
    assert world is distributed.SINGLE and world.main and not world.several
