"""Started by tests/test_distributed.py under torchrun: trains a finetune run on every process, writes what each
process ended with, counts the pictures each process's frozen backbone computes features of, and checks that the
weight check catches a process whose weights differ.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.distributed_probe DATA WEIGHTS OUT
"""
import json
import sys
from pathlib import Path

import torch

import core.folding
from core import distributed
from core.data import scan_dataset
from core.errors import StudioError
from core.strategy import Strategy
from core.train import TrainConfig, train

data, weights, out = (Path(arg) for arg in sys.argv[1:4])
world = distributed.start("cpu")
scan = scan_dataset(data)
config = TrainConfig(backbone="mobilenet_v2", scenario="finetune", epochs=2, device="cpu", lr=0.01)
result = train(config, scan, weights, world=world)
report = {"fingerprint": distributed.weights_digest(result.model), "status": result.status,
          "val_acc": [epoch.val_acc for epoch in result.history], "predictions": result.best_eval.predictions,
          "labels": result.best_eval.labels}
passed = []  # pictures that went through the frozen backbone on this process
folding = core.folding.FoldedEvaluation


def counted(model):
    folded = folding(model)

    def network():
        current = folded()
        return lambda pictures: passed.append(len(pictures)) or current(pictures)

    return network


core.folding.FoldedEvaluation = counted  # what computes a frozen backbone's features
frozen = train(TrainConfig(backbone="mobilenet_v2", scenario="frozen", epochs=1, cached_views=2, device="cpu"), scan,
               weights, world=world)
report["frozen"] = {"status": frozen.status, "pictures": sum(passed)}
if world.rank == 1:
    with torch.no_grad():
        next(result.model.parameters()).add_(1e-3)
try:
    Strategy.decide("cpu", True, world).check_identical(result.model)
    report["caught"] = None
except StudioError as exc:
    report["caught"] = str(exc)
(out / f"rank-{world.rank}.json").write_text(json.dumps(report))
distributed.finish(world)
