"""What a frozen run costs per backbone on this CPU: python -m scripts.backbone_cost [--backbones ...].

For each backbone, in a process of its own, a frozen run of the tutorial's recipe (25 epochs, 3 cached views) on the
tutorial's data, as `python -m core train --scenario frozen` trains it: the seconds its backbone's features took to
cache (first to last batch of the "features" phase, the pictures decoded on threads meanwhile), the whole run's
seconds, and the process's peak RSS. The backbones run one after another, never at once. MobileNetV2 starts from the
real ImageNet weights of $STUDIO_WEIGHTS; the others from random weights saved under their names (the same arithmetic
and memory: no other ImageNet file exists here). Results are in docs/performance.md, "Per backbone".
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROJECT = Path(__file__).resolve().parents[1]
BACKBONES = ("mobilenet_v2", "resnet18", "efficientnet_b0", "convnext_tiny", "vit_b_16")


def one_run(backbone: str, weights: str) -> dict:
    """The frozen run, in this process."""
    from core.data import load_dataset, tutorial_data_dir
    from core.train import Callbacks, TrainConfig, Trainer

    features: list[float] = []

    def on_batch(progress) -> None:
        if progress.phase == "features":
            features.append(time.perf_counter())

    scan = load_dataset(tutorial_data_dir())
    started = time.perf_counter()
    trainer = Trainer(TrainConfig(backbone=backbone, scenario="frozen", seed=0), weights, Callbacks(on_batch))
    result = trainer.train(scan)
    pictures = 3 * len(scan.samples["train"]) + sum(len(scan.samples[s]) for s in scan.evaluation_splits)
    return {"backbone": backbone, "features_s": features[-1] - started if features else 0.0,
            "pictures": pictures, "run_s": time.perf_counter() - started,
            "best_val": max(epoch.val_acc for epoch in result.history),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--child", nargs=2, metavar=("BACKBONE", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_run(*args.child)))
        return
    from core.models import build_architecture

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for backbone in args.backbones:
            weights = os.environ.get("STUDIO_WEIGHTS", "") if backbone == "mobilenet_v2" else f"{folder}/{backbone}.pth"
            if backbone != "mobilenet_v2":
                torch.save(build_architecture(backbone, 1000).state_dict(), weights)
            done = subprocess.run([sys.executable, "-m", "scripts.backbone_cost", "--child", backbone, weights],
                                  cwd=PROJECT, capture_output=True, text=True, env={**os.environ,
                                                                                    "PYTHONPATH": str(PROJECT)})
            if done.returncode:
                raise SystemExit(f"{backbone} failed:\n{done.stderr}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            row = rows[-1]
            print(f"{backbone:>16}: features {row['features_s']:6.1f} s ({row['pictures'] / row['features_s']:.1f} "
                  f"pictures/s), frozen run {row['run_s']:6.1f} s, peak RSS {row['peak_rss_gb']:.2f} GB, "
                  f"best val {row['best_val']:.3f}", flush=True)


if __name__ == "__main__":
    main()
