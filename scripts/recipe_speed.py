"""What the recipes cost, beside the library: python -m scripts.recipe_speed (from the project folder).

Times the learning-rate finder for frozen and for finetune, and LP-FT against plain finetuning of as many epochs
(the tutorial's recipe), interleaved round by round so that both see the same machine load. What LP-FT's probe
(the frozen backbone's features, once, and the logistic regression) adds over its finetune phase is its run's time
outside its epochs, less the tutorial run's (building the model, decoding the pictures); the commands' whole times
are printed beside it. Each run is a `python -m core` command, as a user runs it, timed from start to end. See
docs/recipes.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.runs import find_run

PROJECT = Path(__file__).resolve().parents[1]


def command(*args: str) -> tuple[float, str]:
    """Run `python -m core ARGS` and return its wall time and its output."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=PROJECT,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)})
    if done.returncode:
        raise SystemExit(f"python -m core {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started, done.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    common = ["--backbone", args.backbone, "--no-download"]
    for _ in range(args.rounds):
        for scenario in ("frozen", "finetune"):
            seconds, output = command("lr-find", "--scenario", scenario, *common)
            suggested = next(line for line in output.splitlines() if line.startswith("Suggested"))
            print(f"lr-find {scenario}: {seconds:.1f} s ({suggested})")
    times: dict[str, list[float]] = {"tutorial": [], "lp-ft": []}
    outside: dict[str, list[float]] = {"tutorial": [], "lp-ft": []}
    with tempfile.TemporaryDirectory() as runs_dir:
        for round_number in range(args.rounds):
            for recipe in times:
                seconds, _ = command("train", "--scenario", "finetune", "--recipe", recipe, "--epochs",
                                     str(args.epochs), "--seed", str(round_number), "--runs-dir", runs_dir, *common)
                run = find_run("latest", Path(runs_dir))
                epochs = sum(epoch.seconds for epoch in run.history)
                times[recipe].append(seconds)
                outside[recipe].append(run.seconds - epochs)
                print(f"round {round_number + 1}: finetune with {recipe}, {args.epochs} epochs: {seconds:.1f} s in "
                      f"all, {run.seconds:.1f} s training of which {epochs:.1f} s in its epochs, best val acc "
                      f"{run.best_val_acc:.3f}")
    probe = statistics.median(outside["lp-ft"]) - statistics.median(outside["tutorial"])
    command_extra = statistics.median(times["lp-ft"]) - statistics.median(times["tutorial"])
    print(f"LP-FT's probe adds {probe:+.1f} s over its finetune phase (median); the whole command "
          f"{command_extra:+.1f} s over the tutorial's, whose epochs train with SGD rather than AdamW")


if __name__ == "__main__":
    main()
