"""Real processes stopped at chosen moments: by kill -9, SIGTERM, SIGHUP and Ctrl-C (once and twice),
during the data scan, during training and while the run is being saved. The child is the command line
with markers (scripts/faults.py), so each fault lands where the test says."""
import os
import resource
import signal
import tempfile
import time

import pytest

from core.runs import list_runs, read_run
from scripts.faults import check_runs, start_child, wait_for


def train_args(data, runs, *extra, epochs=3):
    return ["train", "--scenario", "scratch", "--backbone", "mobilenet_v2", "--epochs", str(epochs), "--workers", "0",
            "--device", "cpu", "--data", str(data), "--runs-dir", str(runs), *extra]


def stop_at(args, marker, signals, pause=1.0, **popen):
    """Start the command line, send `signals` when it prints `marker`; returns (exit code, stderr)."""
    with tempfile.TemporaryFile("w+") as errors:
        process = start_child(args, errors, pause=pause, **popen)
        assert wait_for(process, marker, timeout=300), f"the child ended before {marker}"
        for number in signals:
            if popen.get("start_new_session"):
                os.killpg(process.pid, number)  # as a terminal does: to the child and its workers
            else:
                process.send_signal(number)
            time.sleep(0.3)  # two signals closer together reach Python as one
        code = process.wait(timeout=300)
        errors.seek(0)
        return code, errors.read()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_after_an_epoch_saves_the_run_marked_cancelled(tmp_path, tiny_dataset, number):
    runs = tmp_path / "runs"
    code, stderr = stop_at(train_args(tiny_dataset, runs), "EPOCH 1", [number])
    assert code == 128 + number and "Traceback" not in stderr
    [run] = list_runs(runs).runs
    assert run.status == "cancelled" and run.best_epoch >= 1 and 1 <= len(run.history) < 3
    assert check_runs(runs).ok


def test_a_second_ctrl_c_while_saving_finishes_the_save_first(tmp_path, tiny_dataset):
    runs = tmp_path / "runs"
    code, stderr = stop_at(train_args(tiny_dataset, runs, epochs=1), "SAVING", [signal.SIGINT, signal.SIGINT])
    assert code == 130 and "Traceback" not in stderr and "Saving the run first" in stderr
    [run] = list_runs(runs).runs
    assert run.status == "completed" and len(run.history) == 1
    assert check_runs(runs).ok


@pytest.mark.parametrize("marker, recovered", [("SAVING", 0), ("WROTE", 1)])
def test_kill_9_while_saving_leaves_nothing_half_written(tmp_path, tiny_dataset, marker, recovered):
    runs = tmp_path / "runs"
    code, _ = stop_at(train_args(tiny_dataset, runs, epochs=1), marker, [signal.SIGKILL])
    assert code == -signal.SIGKILL
    assert [p.name for p in runs.iterdir() if p.name.startswith(".")]  # the cut-off save is there...
    listing = list_runs(runs)  # ... until the folder is used again
    assert len(listing.recovered) == len(listing.runs) == recovered and not listing.damaged
    assert not [p.name for p in runs.iterdir() if p.name.startswith(".")]
    if recovered:
        run = read_run(listing.recovered[0])
        assert run.status == "completed" and run.id == listing.recovered[0].name and not run.id.startswith(".")
    assert check_runs(runs).ok


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_the_data_scan_stops_without_a_traceback(tmp_path, tiny_dataset, presses):
    runs = tmp_path / "runs"
    code, stderr = stop_at(train_args(tiny_dataset, runs), "SCANNING", [signal.SIGINT] * presses)
    assert code == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert list_runs(runs).runs == [] and check_runs(runs).ok


def test_ctrl_c_in_the_tutorial_loop_says_cancelling_once(tmp_path, tiny_dataset):
    runs = tmp_path / "runs"
    args = train_args(tiny_dataset, runs, "--tutorial-loop", epochs=3)
    args[args.index("--workers") + 1] = "2"
    code, stderr = stop_at(args, "EPOCH 1", [signal.SIGINT], start_new_session=True)
    assert code == 130 and stderr.lower().count("cancelling") == 1, stderr
    assert [run.status for run in list_runs(runs).runs] == ["cancelled"]


@pytest.mark.parametrize("scenario, marker, number", [("frozen", "FEATURES", signal.SIGTERM),
                                                     ("finetune", "EPOCH 1", signal.SIGTERM),
                                                     ("finetune", "EPOCH 1", signal.SIGINT)])
def test_a_signal_to_the_whole_group_on_the_disk_path_saves_the_run(tmp_path, tiny_dataset, random_weights_dir,
                                                                  scenario, marker, number):
    """As `timeout`, a scheduler's cancel or a terminal sends it: to the command and its loader workers, which read the
    pictures from disk (the memory budget set to nothing). Before, PyTorch's workers died of SIGTERM and took the run
    with them."""
    runs = tmp_path / "runs"
    args = train_args(tiny_dataset, runs, "--weights", str(random_weights_dir), epochs=3)
    args[args.index("scratch")] = scenario
    args[args.index("--workers") + 1] = "2"
    code, stderr = stop_at(args, marker, [number], start_new_session=True,
                           env={**os.environ, "STUDIO_MEMORY_BUDGET_MB": "0"})
    assert code == 128 + number and "Traceback" not in stderr and "killed by signal" not in stderr, stderr
    [run] = list_runs(runs).runs
    assert run.status == "cancelled" and len(run.history) < 3
    assert check_runs(runs).ok


@pytest.mark.parametrize("marker, line", [
    ("TIMING", "Stopped before the first cell trained"),  # its estimate times the features on a few pictures
    ("FEATURES", "Stopped while the frozen backbone's features were computed")])
def test_sigterm_while_an_experiment_computes_its_shared_features_ends_with_one_line(tmp_path, tiny_dataset,
                                                                                   random_weights_dir, marker, line):
    runs = tmp_path / "runs"
    args = ["experiment", "--name", "stopped", "--scenario", "frozen", "--seeds", "0", "1", "--sizes", "2", "all",
            "--epochs", "2", "--workers", "2", "--device", "cpu", "--backbone", "mobilenet_v2", "--data",
            str(tiny_dataset), "--runs-dir", str(runs), "--weights", str(random_weights_dir)]
    code, stderr = stop_at(args, marker, [signal.SIGTERM], start_new_session=True,
                           env={**os.environ, "STUDIO_MEMORY_BUDGET_MB": "0"})
    assert code == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr
    [stopped] = [text for text in stderr.splitlines() if text.startswith("Stopped")]
    assert line in stopped, stderr
    assert list_runs(runs).runs == []


def test_a_memory_budget_that_is_not_a_number_is_refused(monkeypatch):
    from core.errors import ConfigError
    from core.loaders import memory_budget

    monkeypatch.setenv("STUDIO_MEMORY_BUDGET_MB", "lots")
    with pytest.raises(ConfigError, match="STUDIO_MEMORY_BUDGET_MB"):
        memory_budget()
    monkeypatch.setenv("STUDIO_MEMORY_BUDGET_MB", "0.5")
    assert memory_budget().bytes == 2**19


def _small_file_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, 2 * 2**20))


def test_a_disk_that_fills_while_saving_gives_one_line_and_leaves_nothing(tmp_path, tiny_dataset):
    runs = tmp_path / "runs"
    with tempfile.TemporaryFile("w+") as errors:
        process = start_child(train_args(tiny_dataset, runs, epochs=1), errors, pause=0, preexec_fn=_small_file_limit)
        process.communicate(timeout=300)
        errors.seek(0)
        stderr = errors.read()
    assert process.returncode == 1 and "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Could not save the run" in line and str(runs) in line
    assert list_runs(runs).runs == []
    assert [path for path in runs.rglob("*") if path.name.startswith(".")] == []  # no staging folder left
