"""Fault injection, beside the library: python -m scripts.faults [--rounds 20] (from the project folder).

Each round starts `python -m core train` in a child process and stops it at a random moment, during
training or while the run is being saved, with a random fault: kill -9, SIGTERM, SIGHUP, Ctrl-C, or Ctrl-C
twice. Then it checks what a user would find in the runs folder: every stop other than kill -9 must have
saved its run, nothing may be damaged, and nothing half-written may be left once the folder is used again.
It ends with "N runs, none damaged, no leftovers", or says what went wrong and exits with 1.

The child is the real command line with markers added: it prints SCANNING before it reads the data set,
FEATURES at the first batch of a frozen backbone's features, EPOCH n after each epoch, SAVING when the weights are
written and run.json is next, and WROTE when the run is complete but not yet in place, pausing briefly at each so
that a fault can land there.
"""
from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
FAULTS = {
    "SIGKILL": [signal.SIGKILL], "SIGTERM": [signal.SIGTERM], "SIGHUP": [signal.SIGHUP],
    "SIGINT": [signal.SIGINT], "SIGINT twice": [signal.SIGINT, signal.SIGINT],
}
MOMENTS = ("EPOCH", "SAVING", "WROTE")


# ---------------------------------------------------------------- the child: the command line with markers

def child(pause: float, cli_args: list[str]) -> int:
    import core.cli
    import core.data
    import core.experiment
    import core.runs
    from core.results import NO_CALLBACKS

    def announce(text: str) -> None:
        print(text, flush=True)

    class TrainerWithMarkers(core.cli.Trainer):
        def __init__(self, config, weights=None, callbacks=NO_CALLBACKS, world=core.cli.SINGLE):
            def batch_done(progress):
                if progress.phase == "features" and progress.batch == 1 and not timing_features:
                    announce("FEATURES")
                    time.sleep(pause)
                if callbacks.on_batch:
                    callbacks.on_batch(progress)

            def epoch_done(stats):
                if callbacks.on_epoch:
                    callbacks.on_epoch(stats)
                announce(f"EPOCH {stats.epoch}")
            super().__init__(config, weights, core.cli.Callbacks(batch_done, epoch_done), world)

    write_file = core.runs._write_file

    def write_file_with_markers(path: Path, data: bytes) -> None:
        if path.name != core.runs.METADATA_FILE:
            return write_file(path, data)
        announce(f"SAVING {path.parent}")
        time.sleep(pause)
        write_file(path, data)
        announce(f"WROTE {path.parent}")
        time.sleep(pause)

    scan_dataset = core.data.scan_dataset

    def scan_dataset_with_marker(folder, kept_in=None):
        announce("SCANNING")
        time.sleep(pause)
        return scan_dataset(folder, kept_in)

    features_seconds = core.experiment._features_seconds
    timing_features = False

    def features_seconds_with_marker(*args):
        nonlocal timing_features
        announce("TIMING")
        time.sleep(pause)
        timing_features = True
        try:
            return features_seconds(*args)
        finally:
            timing_features = False

    core.experiment._features_seconds = features_seconds_with_marker  # an experiment's estimate times its features
    core.data.scan_dataset = scan_dataset_with_marker  # what every command's data set is read by
    core.cli.Trainer = core.experiment.Trainer = TrainerWithMarkers
    core.runs._write_file = write_file_with_markers
    return core.cli.main(cli_args)


def start_child(cli_args: list[str], stderr, pause: float = 0.3, **popen) -> subprocess.Popen:
    """The command line in a child process whose stdout carries the markers; its stderr goes to `stderr`."""
    return subprocess.Popen([sys.executable, "-m", "scripts.faults", "child", str(pause), *cli_args], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, **popen)


def wait_for(process: subprocess.Popen, marker: str, timeout: float = 300) -> str | None:
    """Read the child's stdout up to the first line that starts with `marker`; None if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            return None
        if line.startswith(marker):
            return line.strip()
    raise TimeoutError(f"no {marker} from the child in {timeout} s")


# ---------------------------------------------------------------- a small data set, and the checks

def make_dataset(root: Path, per_class: tuple[int, int] = (8, 4)) -> Path:
    """Two classes of noisy coloured pictures, enough to train on in a second or two per epoch."""
    for split, count in zip(("train", "val"), per_class):
        for name, color in (("red", (200, 40, 40)), ("blue", (40, 60, 200))):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng(zlib.crc32(f"{split}/{name}/{index}".encode()))
                pixels = np.clip(rng.normal(color, 40, size=(64, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index}.png")
    return root


@dataclass
class Health:
    runs: int
    damaged: list[str]
    leftovers: list[str]
    unloadable: list[str]

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.leftovers or self.unloadable)

    def line(self) -> str:
        if self.ok:
            return f"{self.runs} runs, none damaged, no leftovers"
        return (f"{self.runs} runs; damaged: {self.damaged or 'none'}; leftovers: {self.leftovers or 'none'}; "
                f"cannot load: {self.unloadable or 'none'}")


def check_runs(runs_dir: Path) -> Health:
    """What a user finds in `runs_dir` once it is used again (listing it recovers cut-off saves)."""
    from core.errors import RunError
    from core.runs import list_runs, load_model

    listing = list_runs(runs_dir)
    unloadable = []
    for run in listing.runs:
        if run.trained:
            try:
                load_model(run)
            except RunError as exc:
                unloadable.append(f"{run.id}: {exc}")
    leftovers = sorted(entry.name for entry in runs_dir.iterdir() if entry.name.startswith("."))
    return Health(len(listing.runs), [f"{d.path.name}: {d.reason}" for d in listing.damaged], leftovers, unloadable)


def run_ids(runs_dir: Path) -> set[str]:
    if not runs_dir.is_dir():
        return set()
    return {entry.name for entry in runs_dir.iterdir() if not entry.name.startswith(".")}


# ---------------------------------------------------------------- the rounds

def one_round(rng: random.Random, train_args: list[str], runs_dir: Path, epochs: int) -> tuple[str, list[str]]:
    """One child stopped by one fault; returns a line for the log and what went wrong, if anything."""
    from core.runs import recover_runs

    fault, moment = rng.choice(list(FAULTS)), rng.choice(MOMENTS)
    marker = f"EPOCH {rng.randint(1, epochs - 1)}" if moment == "EPOCH" else moment
    delay = rng.uniform(0, 0.5)
    recovered = recover_runs(runs_dir)  # what the round before left, so that it is not counted as this round's
    before = run_ids(runs_dir)
    with tempfile.TemporaryFile("w+") as errors:
        process = start_child(train_args, errors)
        reached = wait_for(process, marker)
        if reached:
            time.sleep(delay)
            for number in FAULTS[fault]:
                process.send_signal(number)
                time.sleep(0.05)
        try:
            code = process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            return f"{fault} at {marker}: did not stop within 300 s", ["a child that did not stop"]
        errors.seek(0)
        stderr = errors.read()
    new = run_ids(runs_dir) - before
    problems = []
    if "Traceback" in stderr:
        problems.append(f"a traceback: {stderr.strip().splitlines()[-1]}")
    if fault != "SIGKILL" and len(new) != 1:
        problems.append(f"{len(new)} runs saved after {fault}; one expected")
    where = f"{marker} + {delay:.2f} s" if reached else "the end (the child finished first)"
    earlier = f" (first recovered {len(recovered)} complete run cut off by the kill before)" if recovered else ""
    return f"{fault:<12} at {where:<24} exit {code:>4}, runs saved: {len(new)}{earlier}", problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:  # python -m scripts.faults child PAUSE CLI_ARGS...
        return child(float(argv[1]), argv[2:])
    parser = argparse.ArgumentParser(prog="python -m scripts.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="for the faults' choice (default: random)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs-dir", type=Path, help="default: a new temporary folder")
    parser.add_argument("--data", type=Path, help="a folder with train/ and val/ (default: generated pictures)")
    parser.add_argument("--scenario", default="scratch", help="default: scratch, which needs no pretrained weights")
    parser.add_argument("--backbone", default="mobilenet_v2")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="studio-faults-"))
    runs_dir = args.runs_dir or work / "runs"
    data = args.data or make_dataset(work / "data")
    seed = args.seed if args.seed is not None else random.randrange(10_000)
    rng = random.Random(seed)
    train_args = ["train", "--scenario", args.scenario, "--backbone", args.backbone, "--epochs", str(args.epochs),
                  "--workers", "0", "--device", "cpu", "--data", str(data), "--runs-dir", str(runs_dir)]
    print(f"Fault injection: {args.rounds} rounds, seed {seed}, runs in {runs_dir}")
    failures = []
    for index in range(1, args.rounds + 1):
        line, problems = one_round(rng, train_args, runs_dir, args.epochs)
        print(f"round {index:>3}: {line}" + (f"  PROBLEM: {'; '.join(problems)}" if problems else ""), flush=True)
        failures += problems
    health = check_runs(runs_dir)
    print(health.line())
    return 0 if health.ok and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
