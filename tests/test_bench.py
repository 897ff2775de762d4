"""The benchmark runs end to end (on generated pictures: its timings are not checked here)."""
import re
from concurrent.futures import ThreadPoolExecutor

from core.device import pick_device
from scripts import bench
from scripts.bench import main, tutorial_loop


def test_the_tutorial_loop_trains_as_the_tutorial_does(tiny_dataset, random_weights_dir):
    outcome = tutorial_loop("frozen", "mobilenet_v2", tiny_dataset, random_weights_dir, 2, 0, pick_device("cpu"), 0)
    assert len(outcome.epoch_seconds) == 2 and 0 <= outcome.best_acc <= 1 and outcome.seconds > 0


def test_train_compares_the_tutorial_loop_with_both_frozen_modes(tiny_dataset, random_weights_dir, capsys):
    main(["train", "--data", str(tiny_dataset), "--weights", str(random_weights_dir), "--scenario", "frozen",
          "--scenario", "frozen-tutorial", "--epochs", "1", "--seeds", "0", "1", "--tutorial-workers", "0",
          "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("seed 0") == 3 and out.count("seed 1") == 3
    table = out[out.index("median total"):]
    assert "tutorial" in table and "project frozen " in table and "project frozen-tutorial" in table


def test_predict_and_memory_report_their_figures(tiny_dataset, random_weights_dir, capsys):
    picture = next((tiny_dataset / "val/red").iterdir())
    main(["predict", "--image", str(picture), "--weights", str(random_weights_dir), "--repeat", "3",
          "--backbone", "mobilenet_v2", "resnet18"])
    main(["memory", "--data", str(tiny_dataset), "--weights", str(random_weights_dir), "--scenario", "frozen",
          "--epochs", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "mobilenet_v2" in out and "resnet18" in out and "median" in out
    assert "peak resident memory" in out and "GiB" in out


def test_skip_tutorial_compares_the_projects_scenarios_with_the_first(tiny_dataset, random_weights_dir, capsys):
    main(["train", "--data", str(tiny_dataset), "--weights", str(random_weights_dir), "--scenario", "frozen",
          "--scenario", "frozen-tutorial", "--epochs", "1", "--seeds", "0", "--skip-tutorial", "--device", "cpu"])
    out = capsys.readouterr().out
    assert re.search(r"seed 0 +frozen-tutorial:", out) and not re.search(r"seed 0 +tutorial:", out)
    assert "vs frozen" in out


def test_analysis_times_the_first_and_the_cached_look(tiny_dataset, random_weights_dir, capsys):
    main(["analysis", "--data", str(tiny_dataset), "--weights", str(random_weights_dir), "--epochs", "1",
          "--device", "cpu"])
    out = capsys.readouterr().out
    table = out[out.index("first time"):]
    for step in ("health check", "ImageNet features", "run outputs, frozen-tutorial", "run outputs, frozen",
                 "top losses", "PCA map, ImageNet", "t-SNE map, frozen features", "total", "target"):
        assert step in table
    assert re.search(r"total +[\d.]+ s +[\d.]+ s", table)


def test_gpu_times_eager_and_compiled_finetune_and_frozen(tiny_dataset, random_weights_dir, capsys, monkeypatch):
    monkeypatch.setattr("core.compiling.BACKEND", "eager")  # TorchDynamo alone: no C++ compiling in a test
    # the cold run in a thread of this process, where the backend above holds, rather than in a new process
    monkeypatch.setattr(bench, "ProcessPoolExecutor", lambda workers, mp_context: ThreadPoolExecutor(workers))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # restored after the cold run sets it
    main(["gpu", "--data", str(tiny_dataset), "--weights", str(random_weights_dir), "--device", "cpu", "--epochs",
          "1", "--backbone", "resnet18"])
    out = capsys.readouterr().out
    table = out[out.index("best val acc"):]
    for run in ("finetune eager", "finetune compiled, cold", "finetune compiled, again", "frozen",
                "tutorial loop, finetune"):
        assert f"resnet18  ImageNet weights  {run} " in table
    assert re.search(r"finetune compiled, cold +[\d.]+ s +[\d.]+ s +[\d.]+ s", table)  # compiling time shown
    assert re.search(r"finetune eager +[\d.]+ s +[\d.]+ s +- ", table)


def test_train_compares_eager_and_compiled_with_the_compiling_time_shown(tiny_dataset, random_weights_dir, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr("core.compiling.BACKEND", "eager")
    monkeypatch.setattr(bench, "ProcessPoolExecutor", lambda workers, mp_context: ThreadPoolExecutor(workers))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")
    main(["train", "--data", str(tiny_dataset), "--weights", str(random_weights_dir), "--epochs", "1", "--seeds", "0",
          "1", "--tutorial-workers", "0", "--device", "cpu", "--compile", "off", "on", "--cold-compile"])
    out = capsys.readouterr().out
    assert re.search(r"seed 1 +finetune compiled: .* compiled yes \([\d.]+ s\)", out)
    assert re.search(r"seed 1 +finetune eager: .* compiled no \(0.0 s\)", out)
    table = out[out.index("median total"):]
    assert re.search(r"project finetune eager +[\d.]+ s +[\d.]+ +[\d.]+ s +[\d.]+ +- ", table)
    assert re.search(r"project finetune compiled +[\d.]+ s +[\d.]+ +[\d.]+ s +[\d.]+ +[\d.]+ s ", table)


def test_processes_times_one_process_against_two_under_torchrun(tiny_dataset, random_weights_dir, capsys):
    main(["processes", "--data", str(tiny_dataset), "--weights", str(random_weights_dir), "--epochs", "1",
          "--seeds", "0", "--launch", "plain", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert re.search(r"seed 0 +1 process, no torchrun: ", out) and re.search(r"seed 0 +torchrun, 2 processes: ", out)
    table = out[out.index("median total"):]
    assert all(loop in table for loop in ("tutorial", "1 process, no torchrun", "torchrun, 2 processes"))
