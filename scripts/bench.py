"""Benchmarks, beside the library: python -m scripts.bench train | experiment | predict | memory | analysis | gpu |
processes (from the project folder).

`train` runs a faithful copy of the tutorial's loop and the project's trainer on the same data, weights,
device and epochs, interleaved seed by seed (so both see the same machine load), and prints each run's
wall time, best and final validation accuracy, and the ratios. `experiment` times a whole experiment grid end to
end (features of a frozen backbone computed once, every cell trained and saved), then the same cells trained one
by one as ordinary runs, each computing its own features. `analysis` times what the dashboard's error analysis and
data health cost, the first time (features computed) and the second (read from their caches). `processes` times
one training run started alone against the same under torchrun on several processes (CPUs, or all the GPUs). See
docs/performance.md.
"""
from __future__ import annotations

import argparse
import copy
import io
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import nn, optim
from torch.optim import lr_scheduler
from torchvision import datasets

from core.analysis import MAP_METHODS, feature_map, losses, run_outputs
from core.cli import print_table
from core.data import ensure_tutorial_data, load_dataset
from core.device import amp_dtype, pick_device
from core.errors import RunError
from core.experiment import (
    ExperimentPlan,
    ExperimentRunner,
    parse_size,
    pending,
    record_plan,
    results,
    size_text,
    subset,
)
from core.health import all_files, check_health, dataset_features
from core.models import build_model, find_local_weights, get_backbone
from core.predict import Predictor
from core.presets import EVAL_TRANSFORM, TRAIN_TRANSFORM
from core.runs import RunRecord, accuracy_text, list_runs, read_run, save_run
from core.train import TrainConfig, train


@dataclass
class Outcome:
    loop: str  # "tutorial", or the project's scenario with "compiled" or "eager" where both were run
    seed: int
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    best_acc: float = 0.0
    final_acc: float = 0.0
    compile_seconds: float = 0.0  # of the training steps that compiled (included in `seconds`)
    compiled: str = "-"  # Compilation.word: "yes", "no" or "failed"


def tutorial_loop(scenario: str, backbone: str, data_dir: Path, weights, epochs: int, seed: int,
                  device: torch.device, workers: int = 4) -> Outcome:
    """The tutorial's code, as it is: ImageFolder, batch 4 through `workers` processes, train_model.

    Only the model comes from core.models, built as the tutorial builds it (the ImageNet backbone with a
    new Linear head; for "frozen" every backbone parameter has requires_grad=False).
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    data_transforms = {"train": TRAIN_TRANSFORM, "val": EVAL_TRANSFORM}  # the tutorial's, defined in core.presets
    image_datasets = {x: datasets.ImageFolder(os.path.join(data_dir, x), data_transforms[x]) for x in ["train", "val"]}
    dataloaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=4, shuffle=True, num_workers=workers)
                   for x in ["train", "val"]}
    dataset_sizes = {x: len(image_datasets[x]) for x in ["train", "val"]}
    num_classes = len(image_datasets["train"].classes)
    built = build_model(backbone, "finetune" if scenario == "finetune" else "frozen-tutorial", num_classes, weights)
    model = built.model
    model = model.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    outcome = Outcome("tutorial", seed, 0.0)
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    for _epoch in range(epochs):
        epoch_started = time.perf_counter()
        for phase in ["train", "val"]:
            model.train() if phase == "train" else model.eval()
            running_loss = 0.0
            running_corrects = 0
            for inputs, labels in dataloaders[phase]:
                inputs = inputs.to(device)
                labels = labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            if phase == "train":
                scheduler.step()
            epoch_acc = running_corrects.double() / dataset_sizes[phase]
            if phase == "val":
                outcome.final_acc = epoch_acc.item()
                if epoch_acc > best_acc:
                    best_acc = epoch_acc
                    best_model_wts = copy.deepcopy(model.state_dict())
        outcome.epoch_seconds.append(time.perf_counter() - epoch_started)
    model.load_state_dict(best_model_wts)
    outcome.seconds = time.perf_counter() - started
    outcome.best_acc = float(best_acc)
    return outcome


def project_run(scenario: str, backbone: str, scan, weights, epochs: int, seed: int, device: str,
                cached_views: int, compile: str = "auto", label: str | None = None, cold: bool = False,
                cache_dir: str | None = None) -> Outcome:
    """The project's trainer. `cold`: compile from nothing, as the first run on a machine does: in a new process
    (no compiled code in memory) with inductor's on-disk caches in a new empty folder."""
    if cold:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(project_run, scenario, backbone, scan, weights, epochs, seed, device, cached_views,
                               compile, label, cold=False, cache_dir=tempfile.mkdtemp(prefix="inductor-cold-")).result()
    if cache_dir:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    started = time.perf_counter()
    config = TrainConfig(backbone=backbone, scenario=scenario, epochs=epochs, seed=seed, device=device,
                         cached_views=cached_views, compile=compile)
    result = train(config, scan, weights)
    seconds = time.perf_counter() - started
    compilation = result.compilation
    return Outcome(label or scenario, seed, seconds, [e.seconds for e in result.history], result.best_val_acc,
                   result.final.val_acc, compilation.seconds if compilation else 0.0,
                   compilation.word if compilation else "-")


def compile_modes(scenario: str, modes: list[str]) -> list[tuple[str, str]]:
    """(compile choice, loop label) of each way `scenario` runs: one, named after the scenario, unless several
    compile choices were asked for."""
    if len(modes) == 1:
        return [(modes[0], scenario)]
    return [(mode, f"{scenario} {COMPILE_LABELS[mode]}") for mode in modes]


COMPILE_LABELS = {"off": "eager", "on": "compiled", "auto": "auto"}


def machine() -> str:
    cpu = platform.machine()  # not platform.processor(): it forks, and the fork would count as peak memory
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    words = [f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        words.append(f"GPU {torch.cuda.get_device_name()}")
    return "; ".join(words)


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


# ---------------------------------------------------------------- commands

def command_train(args: argparse.Namespace) -> None:
    scan = load_dataset(args.data or ensure_tutorial_data(args.data_root, download=False))
    device = pick_device(args.device)
    scenarios = args.scenario or ["finetune"]
    tutorial_scenario = "finetune" if "finetune" in scenarios else "frozen"
    if len({"finetune" if s == "finetune" else "frozen" for s in scenarios}) > 1:
        sys.exit("error: compare finetune and the frozen scenarios in separate runs: each has its own tutorial loop.")
    print(f"Machine: {machine()}; device {device}; {load()}")
    print(f"Data: {scan.root}; backbone {args.backbone}; {args.epochs} epochs; seeds {args.seeds}")
    outcomes: list[Outcome] = []
    for index, seed in enumerate(args.seeds):
        runs = [] if args.skip_tutorial else [("tutorial", partial(
            tutorial_loop, tutorial_scenario, args.backbone, scan.root, args.weights, args.epochs, seed, device,
            args.tutorial_workers))]
        runs += [(loop, partial(project_run, s, args.backbone, scan, args.weights, args.epochs, seed, str(device),
                                args.cached_views, mode, loop, args.cold_compile and mode == "on"))
                 for s in scenarios for mode, loop in compile_modes(s, args.compile)]
        if index % 2:  # alternate who goes first
            runs.reverse()
        for name, run in runs:
            outcome = run()
            outcomes.append(outcome)
            print(f"seed {seed} {name:>18}: {outcome.seconds:7.1f} s, median epoch "
                  f"{statistics.median(outcome.epoch_seconds):6.2f} s, best {outcome.best_acc:.4f}, "
                  f"final {outcome.final_acc:.4f}, compiled {outcome.compiled} ({outcome.compile_seconds:.1f} s)  "
                  f"({load()})", flush=True)

    def of(loop: str) -> list[Outcome]:
        return [o for o in outcomes if o.loop == loop]

    loops = list(dict.fromkeys(o.loop for o in outcomes if o.loop != "tutorial"))
    base = of("tutorial") or of(loops[0])  # without the tutorial loop, ratios are to the first project loop
    base_total = statistics.median(o.seconds for o in base)
    base_epoch = statistics.median(s for o in base for s in o.epoch_seconds)
    base_best = statistics.mean(o.best_acc for o in base)
    rows = [("loop", "median total", "x faster", "median epoch", "x faster", "compiling", "mean best acc",
             f"vs {base[0].loop}", "mean final acc")]
    for loop in loops if args.skip_tutorial else ["tutorial", *loops]:
        runs = of(loop)
        total = statistics.median(o.seconds for o in runs)
        epoch = statistics.median(s for o in runs for s in o.epoch_seconds)
        best = statistics.mean(o.best_acc for o in runs)
        compiling = statistics.median(o.compile_seconds for o in runs)
        rows.append((loop if loop == "tutorial" else f"project {loop}", f"{total:.1f} s", f"{base_total / total:.2f}",
                     f"{epoch:.2f} s", f"{base_epoch / epoch:.2f}", f"{compiling:.1f} s" if compiling else "-",
                     f"{best:.4f}", f"{100 * (best - base_best):+.1f} pt",
                     f"{statistics.mean(o.final_acc for o in runs):.4f}"))
    print()
    print_table(rows)
    print(f"({load()})")


def phone_photo(width: int = 4000, height: int = 3000) -> bytes:
    """A 12-megapixel JPEG as a phone takes them (quality 90, about 5 MB), with texture at every scale."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, height // 4, width // 4, generator=generator) * 255
    pixels = nn.functional.interpolate(noise, size=(height, width), mode="bilinear").round().clamp(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels[0].permute(1, 2, 0).to(torch.uint8).numpy()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def command_predict(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    if args.image:
        pictures = [(str(args.image), args.image.read_bytes())]
    else:
        scan = load_dataset(ensure_tutorial_data(args.data_root, download=False))
        first = scan.samples["val"][0][0]
        pictures = [(f"{first.name} (a validation picture)", first.read_bytes()),
                    ("a 4000x3000 phone photo (generated)", phone_photo())]
    print(f"Machine: {machine()}; device {device}; {load()}")
    print(f"Predictor.predict(bytes): decoding, preprocessing and the model; median of {args.repeat}")
    rows = [("backbone", "picture", "size", "first call", "median", "min", "max")]
    for backbone in args.backbone:
        model = build_model(backbone, "frozen", 2, args.weights).model.to(device).eval()
        predictor = Predictor(model, ["ants", "bees"], device)
        for name, data in pictures:
            timings = []
            for _ in range(args.repeat + 1):
                started = time.perf_counter()
                predictor.predict(data)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timings.append(1000 * (time.perf_counter() - started))
            rest = timings[1:]
            rows.append((backbone, name, f"{len(data) / 2**20:.2f} MiB", f"{timings[0]:.1f} ms",
                         f"{statistics.median(rest):.1f} ms", f"{min(rest):.1f} ms", f"{max(rest):.1f} ms"))
    print_table(rows)


def command_experiment(args: argparse.Namespace) -> None:
    scan = load_dataset(args.data or ensure_tutorial_data(args.data_root, download=False))
    scenario = (args.scenario or ["frozen"])[0]
    recipe = TrainConfig(backbone=args.backbone, scenario=scenario, epochs=args.epochs, device=args.device)
    plan = ExperimentPlan("bench", str(scan.root), recipe, [scenario], args.seeds, [parse_size(s) for s in args.sizes])
    print(f"Machine: {machine()}; device {pick_device(args.device)}; {load()}")
    print(f"Data: {scan.root}; {scenario} {args.backbone}; {args.epochs} epochs; seeds {args.seeds}; "
          f"pictures per class {' '.join(args.sizes)}: {len(plan.grid())} runs")
    with tempfile.TemporaryDirectory() as runs_dir:
        started = time.perf_counter()
        record_plan(plan, Path(runs_dir))
        runner = ExperimentRunner(plan, scan, Path(runs_dir), args.weights)
        cells = pending(plan, list_runs(Path(runs_dir)).runs)
        cell_seconds = []
        for cell in cells:
            cell_started = time.perf_counter()
            runner.save(cell, runner.train_cell(cell))
            cell_seconds.append(time.perf_counter() - cell_started)
        total = time.perf_counter() - started
        outcome = results(plan, list_runs(Path(runs_dir)).runs)
    others = statistics.median(cell_seconds[1:]) if len(cell_seconds) > 1 else 0.0
    print(f"experiment: {len(cells)} runs trained and saved in {total:.1f} s end to end ({load()}); the first "
          f"run, with the features: {cell_seconds[0]:.1f} s; the others: median {others:.2f} s; backbone feature "
          f"passes: {runner.feature_passes}")
    if not args.skip_alone:
        started = time.perf_counter()
        for cell in cells:
            train(plan.config(cell), subset(scan, cell.pictures_per_class, cell.seed), args.weights)
        alone = time.perf_counter() - started
        print(f"the same {len(cells)} runs trained alone, each computing its own features (not saved): {alone:.1f} s, "
              f"{alone / total:.1f} x the experiment's time ({load()})")
    print_table([("size", "seeds", "best val acc (optimistic)", "final val acc"),
                 *((size_text(row.pictures_per_class), len(row.seeds), accuracy_text(row.best_val),
                    accuracy_text(row.final_val)) for row in outcome.rows)])


def command_memory(args: argparse.Namespace) -> None:
    """One training run in this (fresh) process; its peak resident memory is the whole process's. Compiling may
    start worker processes: the largest of their peaks is shown beside it."""
    if args.cold_compile:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
    scan = load_dataset(args.data or ensure_tutorial_data(args.data_root, download=False))
    config = TrainConfig(backbone=args.backbone, scenario=args.scenario[0] if args.scenario else "finetune",
                         epochs=args.epochs, device=args.device, fast=not args.tutorial_loop, compile=args.compile)
    started = time.perf_counter()
    result = train(config, scan, args.weights)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; this process only
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest ended child's
    print(f"Machine: {machine()}; {load()}")
    loop = "tutorial loop" if args.tutorial_loop else "fast"
    print(f"{config.scenario} {config.backbone}, {config.epochs} epochs, {loop}, compiled: "
          f"{result.compilation.describe()}: {time.perf_counter() - started:.1f} s, best val acc "
          f"{result.best_val_acc:.4f}")
    print(f"peak resident memory: {peak:.0f} MiB = {peak / 1024:.2f} GiB = {peak * 2**20 / 1e9:.2f} GB"
          + (f"; largest ended child process: {children:.0f} MiB" if children else ""))


GPU_TARGETS = {("resnet18", "finetune"): 10.0, ("resnet18", "frozen"): 3.0}  # seconds end to end, 25 epochs


def weights_for(backbone: str, given: Path | None, folder: Path) -> tuple[Path | None, str]:
    """(weights, what they are): real ones when find_local_weights finds them, else randomly initialised ones saved
    in `folder`, for timings only."""
    if find_local_weights(get_backbone(backbone), given):
        return given, "ImageNet weights"
    path = folder / f"{backbone}-random.pth"
    torch.save(get_backbone(backbone).build().state_dict(), path)
    return path, "random weights: timing only"


def command_gpu(args: argparse.Namespace) -> None:
    """On CUDA with mixed precision, 25 epochs: finetune eager, compiled from nothing, and compiled again in the same
    process; frozen (features cached: nothing is compiled); and the tutorial's loop. (--device cpu rehearses it.)"""
    scan = load_dataset(args.data or ensure_tutorial_data(args.data_root, download=False))
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU: a rehearsal"
    torch.ones(1, device=device).sum().item()  # the CUDA context, made once for every run below
    print(f"Machine: {machine()}; device {device}, {name}; mixed precision {amp_dtype(device)}; {load()}")
    print(f"Data: {scan.root}; {args.epochs} epochs; seed {args.seeds[0]}")
    rows = [("backbone", "weights", "run", "total", "median epoch", "compiling", "best val acc", "target", "met")]
    with tempfile.TemporaryDirectory() as folder:
        for backbone in args.backbone:
            weights, kind = weights_for(backbone, args.weights, Path(folder))
            runs = [("finetune", "off", "finetune eager", False), ("finetune", "on", "finetune compiled, cold", True),
                    ("finetune", "on", "finetune compiled, again", False), ("frozen", "auto", "frozen", False)]
            outcomes = [(label, project_run(scenario, backbone, scan, weights, args.epochs, args.seeds[0], str(device),
                                            TrainConfig.cached_views, mode, label, cold))
                        for scenario, mode, label, cold in runs]
            if not args.skip_tutorial:
                outcomes.append(("tutorial loop, finetune", tutorial_loop(
                    "finetune", backbone, scan.root, weights, args.epochs, args.seeds[0], device)))
            for label, outcome in outcomes:
                target = GPU_TARGETS.get((backbone, label.split()[0])) if label != "tutorial loop, finetune" else None
                print(f"{backbone} {label}: {outcome.seconds:.1f} s, median epoch "
                      f"{statistics.median(outcome.epoch_seconds):.3f} s, compiling {outcome.compile_seconds:.1f} s, "
                      f"best {outcome.best_acc:.4f} ({load()})", flush=True)
                rows.append((backbone, kind, label, f"{outcome.seconds:.1f} s",
                             f"{statistics.median(outcome.epoch_seconds):.3f} s",
                             f"{outcome.compile_seconds:.1f} s" if outcome.compiled in ("yes", "failed") else "-",
                             f"{outcome.best_acc:.4f}", f"<= {target:.0f} s" if target else "-",
                             ("yes" if outcome.seconds <= target else "no") if target else "-"))
    print()
    print_table(rows)


def launch_training(launch: str, args: argparse.Namespace, seed: int, runs_dir: Path) -> Outcome:
    """One `python -m core train` run, as a user starts it: `plain` alone, or under torchrun with N processes (`all`:
    one per GPU). Timed from the command's start to its end (starting, decoding the pictures and saving included)."""
    processes = torch.cuda.device_count() if launch == "all" else None if launch == "plain" else int(launch)
    if processes == 0:
        sys.exit("error: --launch all starts one process per GPU, and this machine has none.")
    command = [sys.executable, "-m", "core", "train", "--scenario", args.scenario, "--backbone", args.backbone,
               "--epochs", str(args.epochs), "--seed", str(seed), "--device", args.device, "--runs-dir", str(runs_dir),
               "--batch-size", str(args.batch_size), "--no-download"]
    for option, value in (("--data", args.data), ("--data-root", args.data_root), ("--weights", args.weights)):
        if value:
            command += [option, str(value)]
    if processes:
        command[1:2] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m"]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode:
        sys.exit(f"error: {' '.join(command)} failed:\n{finished.stderr[-3000:]}")
    run = max(saved_runs(runs_dir), key=lambda run: run.created)
    shutil.rmtree(runs_dir)
    label = "1 process, no torchrun" if processes is None else f"torchrun, {processes} process{'es' * (processes > 1)}"
    return Outcome(label, seed, seconds, [e.seconds for e in run.history], run.best_val().value, run.final.val_acc)


def command_processes(args: argparse.Namespace) -> None:
    """1 process against several (torchrun, DistributedDataParallel), interleaved seed by seed with the tutorial's
    loop: on CPUs (gloo), or 1 GPU against all of the machine's GPUs (--device cuda --launch plain all)."""
    scan = load_dataset(args.data or ensure_tutorial_data(args.data_root, download=False))
    device = pick_device(args.device)
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"
    print(f"Machine: {machine()}; device {device}; GPUs: {gpus}; {load()}")
    print(f"Data: {scan.root}; {args.scenario} {args.backbone}; {args.epochs} epochs; batch {args.batch_size} (the "
          f"global batch); seeds {args.seeds}")
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as work:
        for index, seed in enumerate(args.seeds):
            runs = [partial(launch_training, launch, args, seed, Path(work) / f"runs-{launch}-{seed}")
                    for launch in args.launch]
            if not args.skip_tutorial:
                runs.insert(0, partial(tutorial_loop, args.scenario, args.backbone, scan.root, args.weights,
                                       args.epochs, seed, device))
            for run in runs if index % 2 == 0 else reversed(runs):  # alternate who goes first
                outcome = run()
                outcomes.append(outcome)
                print(f"seed {seed} {outcome.loop:>26}: {outcome.seconds:7.1f} s, median epoch "
                      f"{statistics.median(outcome.epoch_seconds):6.2f} s, best {outcome.best_acc:.4f}, final "
                      f"{outcome.final_acc:.4f} ({load()})", flush=True)
    loops = list(dict.fromkeys(o.loop for o in outcomes))
    base = [o for o in outcomes if o.loop == loops[0]]
    first_project = next(loop for loop in loops if loop != "tutorial")
    rows = [("loop", "median total", f"x vs {loops[0]}", "median epoch", f"x vs {loops[0]}",
             f"epoch x vs {first_project}", "mean best acc", "mean final acc")]
    epoch_of = {loop: statistics.median(s for o in outcomes if o.loop == loop for s in o.epoch_seconds)
                for loop in loops}
    for loop in loops:
        runs = [o for o in outcomes if o.loop == loop]
        total = statistics.median(o.seconds for o in runs)
        rows.append((loop, f"{total:.1f} s", f"{statistics.median(o.seconds for o in base) / total:.2f}",
                     f"{epoch_of[loop]:.2f} s", f"{epoch_of[loops[0]] / epoch_of[loop]:.2f}",
                     f"{epoch_of[first_project] / epoch_of[loop]:.2f}" if loop != "tutorial" else "-",
                     f"{statistics.mean(o.best_acc for o in runs):.4f}",
                     f"{statistics.mean(o.final_acc for o in runs):.4f}"))
    print()
    print_table(rows)
    print(f"({load()})")


ANALYSIS_TARGETS = {"first": 30.0, "cached": 2.0}  # seconds, every step together
ANALYSIS_PAIR = ({"finetune": 0, "frozen-tutorial": 1}, {"frozen": 0})  # per run: the scenarios it may be, preferred


def pick_runs(runs: list[RunRecord], root: Path) -> list[RunRecord]:
    """A finetune (else frozen-tutorial) run and a frozen run of the data set at `root`: of each, the one trained on
    the most pictures, with the lowest seed."""
    root = Path(root).resolve()
    chosen = []
    for scenarios in ANALYSIS_PAIR:
        candidates = [run for run in runs if run.scenario in scenarios and run.trained and run.val_predictions
                      and run.dataset.root.resolve() == root]
        if not candidates:
            sys.exit(f"error: no saved {' or '.join(scenarios)} run of {root} with validation predictions in the runs "
                     "folder; leave out --runs-dir to train two quick runs.")
        chosen.append(min(candidates, key=lambda run: (scenarios[run.scenario], -run.dataset.total("train"),
                                                        run.config.seed or 0, run.id)))
    return chosen


def saved_runs(runs_dir: Path) -> list[RunRecord]:
    """The readable runs of `runs_dir`, read only (list_runs would also finish a cut-off save there)."""
    runs = []
    for folder in sorted(Path(runs_dir).iterdir()):
        try:
            runs.append(read_run(folder))
        except (RunError, OSError):
            pass
    return runs


def quick_runs(scan, runs_dir: Path, args: argparse.Namespace) -> list[RunRecord]:
    """frozen-tutorial and frozen runs of `args.epochs` epochs, saved into `runs_dir` (not timed)."""
    saved = []
    for scenario in ("frozen-tutorial", "frozen"):
        config = TrainConfig(backbone=args.backbone, scenario=scenario, epochs=args.epochs, seed=0, device=args.device)
        saved.append(save_run(train(config, scan, args.weights), scan, runs_dir))
    return saved


def analysis_pass(scan, runs: list[RunRecord], runs_dir: Path, args: argparse.Namespace) -> list[tuple[str, float]]:
    """The dashboard's calls, one timed step each: the health check, the ImageNet features of the validation pictures
    (from the health check's cache), each run's outputs on its validation pictures, the top losses, and the PCA and
    t-SNE maps of each run's features and of the ImageNet ones."""
    device = str(pick_device(args.device))
    steps: list[tuple[str, float]] = []

    def timed(name: str, call):
        started = time.perf_counter()
        value = call()
        steps.append((name, time.perf_counter() - started))
        return value

    report = timed(f"health check ({len(all_files(scan))} pictures' features)",
                   lambda: check_health(scan, runs_dir, args.weights, args.backbone, device=device))
    features = {}
    if report.backbone:  # else no ImageNet weights: no reference map
        everything = timed("ImageNet features (health's cache)", lambda: dataset_features(
            scan, runs_dir, args.backbone, args.weights, device))
        rows = [i for i, file in enumerate(everything.files) if file.startswith("val/")]
        features["ImageNet"] = everything.features[rows]
    for run in runs:
        outputs = timed(f"run outputs, {run.scenario} ({len(run.val_predictions.files)} val pictures)",
                        lambda run=run: run_outputs(run, "val", device))
        features[run.scenario] = outputs.features
        timed(f"top losses, {run.scenario}", lambda run=run, outputs=outputs: losses(run, outputs))
    for method, title in MAP_METHODS.items():
        for name, values in features.items():
            timed(f"{title} map, {name} features", lambda values=values, method=method: feature_map(values, method))
    return steps


def command_analysis(args: argparse.Namespace) -> None:
    scan = load_dataset(args.data or ensure_tutorial_data(args.data_root, download=False))
    print(f"Machine: {machine()}; device {pick_device(args.device)}; {load()}")
    with tempfile.TemporaryDirectory() as work:
        runs_dir = Path(work) / "runs"
        runs_dir.mkdir()
        if args.runs_dir:
            runs = []
            for run in pick_runs(saved_runs(args.runs_dir), scan.root):  # copied without their kept outputs
                shutil.copytree(run.path, runs_dir / run.path.name, ignore=shutil.ignore_patterns("outputs-*.pt"))
                runs.append(read_run(runs_dir / run.path.name))
            origin = f"copied from {args.runs_dir}"
        else:
            started = time.perf_counter()
            runs = quick_runs(scan, runs_dir, args)
            origin = f"trained for this: {args.epochs} epochs, {time.perf_counter() - started:.0f} s, not counted"
        print(f"Data: {scan.root}; runs {', '.join(f'{r.scenario} {r.id}' for r in runs)} ({origin}); every cache "
              f"starts empty in {work}")
        first = analysis_pass(scan, runs, runs_dir, args)
        print(f"first time done ({load()})", flush=True)
        cached = analysis_pass(scan, runs, runs_dir, args)
    rows = [("step", "first time", "second time (cached)")]
    rows += [(name, f"{a:.2f} s", f"{b:.2f} s") for (name, a), (_, b) in zip(first, cached)]
    totals = [sum(seconds for _, seconds in steps) for steps in (first, cached)]
    rows.append(("total", f"{totals[0]:.1f} s", f"{totals[1]:.2f} s"))
    rows.append(("target", f"<= {ANALYSIS_TARGETS['first']:.0f} s", f"<= {ANALYSIS_TARGETS['cached']:.0f} s"))
    rows.append(("met", *("yes" if total <= target else "no" for total, target in
                          zip(totals, ANALYSIS_TARGETS.values()))))
    print_table(rows)
    print("(The maps are not kept on disk: the dashboard keeps them in memory, per features and method, "
          f"st.cache_data; the second time here computes them again. {load()})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("train", "tutorial loop against the project's trainer, interleaved"),
                            ("experiment", "a whole experiment grid end to end, then some of its cells alone"),
                            ("predict", "time classifying one uploaded photo"),
                            ("memory", "peak memory of one training run (run it in a fresh process)"),
                            ("gpu", "CUDA: ResNet-18 and MobileNetV2, finetune eager and compiled, frozen"),
                            ("processes", "1 process against several (torchrun), or 1 GPU against all"),
                            ("analysis", "error analysis and data health: first time, then cached")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--backbone", default=["resnet18", "mobilenet_v2"] if name == "gpu" else "mobilenet_v2",
                             nargs="+" if name in ("predict", "gpu") else None)
        command.add_argument("--weights", type=Path, help="weights file or folder (default: $STUDIO_WEIGHTS, ...)")
        command.add_argument("--data-root", type=Path,
                             help="folder holding hymenoptera_data (default: $STUDIO_DATA_ROOT)")
        command.add_argument("--device", default={"predict": "cpu", "gpu": "cuda"}.get(name, "auto"))
        if name == "predict":
            command.add_argument("--image", type=Path, help="the picture (default: the first validation picture)")
            command.add_argument("--repeat", type=int, default=20)
            continue
        command.add_argument("--data", type=Path, help="any ImageFolder-style folder instead of hymenoptera_data")
        if name == "analysis":
            command.add_argument("--runs-dir", type=Path, help="take a finetune (else frozen-tutorial) and a frozen "
                                 "run of the data set from here, copied (default: train two quick runs, not timed)")
            command.add_argument("--epochs", type=int, default=3, help="epochs of the quick runs (default: 3)")
            continue
        if name == "processes":
            command.add_argument("--scenario", default="finetune", choices=["finetune", "frozen"])
            command.add_argument("--epochs", type=int, default=25)
            command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
            command.add_argument("--batch-size", type=int, default=4, help="the global batch (default: 4)")
            command.add_argument("--launch", nargs="+", default=["plain", "2"], help="how each run starts: plain "
                                 "(python -m core train), or a number of torchrun processes, or all (one per GPU)")
            command.add_argument("--skip-tutorial", action="store_true", help="leave out the tutorial's loop")
            continue
        if name == "gpu":
            command.add_argument("--epochs", type=int, default=25)
            command.add_argument("--seeds", type=int, nargs=1, default=[0])
            command.add_argument("--skip-tutorial", action="store_true", help="leave out the tutorial's loop")
            continue
        command.add_argument("--scenario", action="append",
                             choices=["finetune", "frozen", "frozen-tutorial", "scratch"],
                             help="the project's scenario(s) to run (repeatable; default: finetune)")
        command.add_argument("--epochs", type=int, default=25)
        if name == "experiment":
            command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
            command.add_argument("--sizes", nargs="+", default=["1", "2", "5", "10", "25", "all"])
            command.add_argument("--skip-alone", action="store_true",
                                 help="do not train the cells again one by one (for the ratio)")
        elif name == "train":
            command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
            command.add_argument("--cached-views", type=int, default=TrainConfig.cached_views)
            command.add_argument("--tutorial-workers", type=int, default=4, help="the tutorial's num_workers (4)")
            command.add_argument("--skip-tutorial", action="store_true", help="run only the project's scenarios")
            command.add_argument("--compile", nargs="+", choices=["auto", "on", "off"], default=["auto"],
                                 help="the project's compile choice(s); with several (off on) each scenario runs once "
                                 "with each, interleaved (default: auto)")
            command.add_argument("--cold-compile", action="store_true", help="each compiled run compiles from nothing, "
                                 "in a new process with an empty on-disk cache (as the first run on a machine)")
        else:
            command.add_argument("--tutorial-loop", action="store_true", help="measure the tutorial's loop instead")
            command.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
            command.add_argument("--cold-compile", action="store_true", help="compile with an empty on-disk cache")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # the tutorial's 4 workers on 2 cores
    {"train": command_train, "experiment": command_experiment, "predict": command_predict,
     "memory": command_memory, "analysis": command_analysis, "gpu": command_gpu,
     "processes": command_processes}[args.command](args)


if __name__ == "__main__":
    main()
