"""Command line: python -m core train | experiment | predict | runs | export | data."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from core import errors
from core.analysis import class_metrics, disagreements
from core.backbones import BACKBONES, families, select
from core.config import COMPILE_CHOICES, OPTIMIZERS, RECIPES, SCHEDULES
from core.data import DatasetScan, ensure_tutorial_data, load_dataset
from core.device import pick_device
from core.distributed import SINGLE, World, finish, start
from core.errors import ConfigError, RunError, StudioError, TrainingCancelled
from core.eta import Estimator, duration_text
from core.exclusions import change_exclusions, read_exclusions, training_scan
from core.experiment import (
    DEFAULT_SIZES,
    FEWEST_SEEDS,
    Cell,
    ExperimentPlan,
    ExperimentResults,
    ExperimentRunner,
    cell_plans,
    default_name,
    estimate_seconds,
    mean_text,
    parse_size,
    pending,
    read_plan,
    recipe_configs,
    record_plan,
    results,
    share,
    size_text,
)
from core.export import FORMATS, export_run
from core.health import NEAR_DUPLICATE, DuplicatePair, HealthReport, check_health, pairs_text
from core.lr_find import END_RATE, START_RATE, STEPS, find_learning_rate
from core.models import SCENARIOS, TUTORIAL_SCENARIOS, catalogue_rows
from core.predict import load_predictor
from core.results import ScenarioPlan
from core.runs import RunRecord, accuracy_text, check_runs_dir, dataset_dir, find_run, list_runs, save_run
from core.train import BatchProgress, Callbacks, EpochStats, OnBatch, OnEpoch, TrainConfig, Trainer, TrainResult

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {postfix}]"  # the time left is ours
SCENARIO_GROUPS = {"both": list(TUTORIAL_SCENARIOS), "all": list(SCENARIOS)}
# What changes each setting on the command line, added to the library's own error messages.
HINTS = {
    errors.DATA_ROOT: "On the command line: --data-root FOLDER (the folder that holds hymenoptera_data), "
                      "or --data FOLDER (any folder with train/ and val/).",
    errors.DATA: "On the command line: --data FOLDER, a folder with train/ and val/.",
    errors.WEIGHTS: "On the command line: --weights FILE_OR_FOLDER.",
    errors.RUNS_DIR: "On the command line: --runs-dir FOLDER.",
    errors.DEVICE: "On the command line: --device auto or --device cpu.",
    errors.RUN: "List the saved runs with: python -m core runs",
}
SUMMARY_COLUMNS = ("run", "status", "scenario", "backbone", "recipe", "epochs", "best val acc", "final val acc",
                   "test acc", "time", "trainable / total params")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        command = " ".join(["python -m core", *self.prog.split()[1:], "--help"])
        self.exit(2, f"error: {message} (see: {command})\n")


def add_data_options(parser: argparse.ArgumentParser, training: bool = False) -> None:
    parser.add_argument("--data", type=Path, help="a folder with train/ and val/, one sub-folder per class "
                        "(default: the tutorial's hymenoptera_data under the data root)")
    parser.add_argument("--data-root", type=Path, help="where the tutorial's data set is kept or downloaded "
                        "(default: $STUDIO_DATA_ROOT or ./data)")
    parser.add_argument("--no-download", action="store_true", help="never download the tutorial's data set")
    if training:
        parser.add_argument("--keep-excluded", action="store_true", help="train on every picture, also those on the "
                            "data set's exclusion list (python -m core data --health shows it)")


def add_recipe_options(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """The run's settings. A setting left out takes the recipe's value."""
    defaults = TrainConfig()
    parser.add_argument("--backbone", default=None if several else defaults.backbone,
                        action="append" if several else "store", help="a torchvision ImageNet classifier, as "
                        "torchvision names it (default: resnet18; python -m core backbones lists them)" +
                        ("; repeat it to compare backbones" if several else ""))
    parser.add_argument("--recipe", default=None if several else defaults.recipe, choices=list(RECIPES),
                        action="append" if several else "store",
                        help="tutorial (2017), fine-tune (fastai's) or lp-ft (linear probe, then finetune); each "
                        "brings its own defaults for the settings below (default: tutorial)" +
                        ("; repeat it to compare recipes" if several else ""))
    parser.add_argument("--epochs", type=int, help="all phases together (tutorial: 25, fine-tune and lp-ft: 5)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, help="the base learning rate, the last layer's (tutorial: 0.001, "
                        "fine-tune: 0.002, lp-ft: 0.00001)")
    parser.add_argument("--momentum", type=float, help="SGD's momentum, AdamW's beta1 (default: 0.9)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd or adamw (fine-tune and lp-ft: adamw)")
    parser.add_argument("--schedule", choices=SCHEDULES, help="step (StepLR, each epoch), one-cycle or cosine (with "
                        "warm-up), each batch")
    parser.add_argument("--step-size", type=int, help="StepLR step, in epochs (default: 7)")
    parser.add_argument("--gamma", type=float, help="StepLR factor (default: 0.1)")
    parser.add_argument("--weight-decay", type=float, help="(fine-tune: 0.01, else 0)")
    parser.add_argument("--label-smoothing", type=float, help="0 to 1 (default: 0)")
    parser.add_argument("--head-epochs", type=int, help="epochs in which the new last layer trains alone on the "
                        "frozen backbone first (fine-tune: 1)")
    parser.add_argument("--lr-spread", type=float, help="the last layer's rate over the first layers': rates spread "
                        "over layer groups (fine-tune: 100; 1: one rate)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, help="data-loader processes (default: none, the pictures are "
                        "decoded once into memory; with --tutorial-loop up to 4)")
    parser.add_argument("--cached-views", type=int, default=defaults.cached_views,
                        help="frozen: augmented views of each training picture whose backbone features are "
                        f"computed once and reused every epoch (default: {defaults.cached_views})")
    parser.add_argument("--tutorial-loop", action="store_true", help="no fast paths: decode every picture and run "
                        "the whole network in every epoch, as the tutorial does (slower; for comparison)")
    parser.add_argument("--compile", default=defaults.compile, choices=COMPILE_CHOICES,
                        help="torch.compile the training steps of finetune and scratch: auto = where it was measured "
                        "to pay end to end (so far nowhere: see docs/performance.md), on, or off (default: auto)")
    parser.add_argument("--weights", type=Path, help="a pretrained weights file, or a folder of them "
                        "named BACKBONE-*.pth (default: $STUDIO_WEIGHTS, then torchvision's cache, then download)")
    parser.add_argument("--runs-dir", type=Path, help="where runs are saved (default: $STUDIO_RUNS_DIR or ./runs)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="core", description="Transfer learning studio: train, list and use runs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    train_cmd = commands.add_parser("train", help="train one or more scenarios and save each run")
    train_cmd.add_argument("--scenario", default="both", choices=[*SCENARIOS, *SCENARIO_GROUPS],
                           help="both = finetune and frozen; all = every scenario (default: both)")
    add_recipe_options(train_cmd)
    train_cmd.add_argument("--seed", type=int, default=TrainConfig().seed)
    add_data_options(train_cmd, training=True)

    experiment_cmd = commands.add_parser(
        "experiment", help="train a grid of scenarios x seeds x training pictures per class, or resume it, and show "
        "means with 95%% intervals and paired differences")
    experiment_cmd.add_argument("--scenario", action="append", choices=[*SCENARIOS, *SCENARIO_GROUPS],
                                help="repeat for several; both = finetune and frozen; all = every scenario "
                                "(default: frozen)")
    experiment_cmd.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: 0 1 2)")
    experiment_cmd.add_argument("--sizes", nargs="+", default=[size_text(s) for s in DEFAULT_SIZES],
                                help="training pictures per class, or all (default: 1 2 5 10 25 all)")
    experiment_cmd.add_argument("--name", help="the experiment's name; the same name resumes it (default: from the "
                                "data set and recipe, so the same command resumes)")
    experiment_cmd.add_argument("--show", action="store_true", help="only show the results saved so far")
    add_recipe_options(experiment_cmd, several=True)
    add_data_options(experiment_cmd, training=True)
    add_lr_find_command(commands)
    add_backbones_command(commands)

    predict_cmd = commands.add_parser("predict", help="classify pictures with a saved run")
    predict_cmd.add_argument("images", nargs="+", type=Path)
    predict_cmd.add_argument("--run", default="latest", help="run id, id prefix, folder, latest or latest:SCENARIO")
    predict_cmd.add_argument("--runs-dir", type=Path)
    predict_cmd.add_argument("--device", default="cpu")

    runs_cmd = commands.add_parser("runs", help="list saved runs, or show some of them in detail")
    runs_cmd.add_argument("--show", nargs="+", metavar="RUN", help="these runs (id, id prefix, folder, latest or "
                          "latest:SCENARIO) side by side: per-class precision, recall and F1, confusion matrices, and "
                          "the validation pictures on which two of them disagree")
    runs_cmd.add_argument("--runs-dir", type=Path)

    export_cmd = commands.add_parser("export", help="write a saved run as a bundle to use outside the studio")
    export_cmd.add_argument("--run", default="latest", help="run id, id prefix, folder, latest or latest:SCENARIO")
    export_cmd.add_argument("--format", required=True, choices=list(FORMATS),
                            help="onnx (onnxruntime), pt2 (PyTorch's torch.export; torch.export.load) or torchscript "
                                 "(legacy: deprecated by PyTorch)")
    export_cmd.add_argument("--out", type=Path, default=Path("exports"), help="folder for the zip (default: ./exports)")
    export_cmd.add_argument("--runs-dir", type=Path)

    data_cmd = commands.add_parser("data", help="check a data set (downloading the tutorial's if needed), its health, "
                                   "and which of its pictures training leaves out")
    data_cmd.add_argument("--health", action="store_true", help="class balance, exact and near-duplicates (within "
                          "and across splits) and likely label errors; kept beside the runs until a picture changes")
    data_cmd.add_argument("--exclude", nargs="+", default=[], metavar="FILE", help="leave these pictures out of "
                          "training from now on (paths under the data set's folder, as --health lists them); the "
                          "files themselves are not touched")
    data_cmd.add_argument("--include", nargs="+", default=[], metavar="FILE", help="take pictures off the exclusion "
                          "list")
    data_cmd.add_argument("--backbone", help="whose ImageNet features the health check "
                          "compares (default: the tutorial's ResNet-18 if its weights are here, else one whose are)")
    data_cmd.add_argument("--weights", type=Path, help="its pretrained weights file or folder (default: "
                          "$STUDIO_WEIGHTS, then torchvision's cache, then download)")
    data_cmd.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    data_cmd.add_argument("--runs-dir", type=Path, help="where the exclusion list and the health check are kept, "
                          "beside the runs (default: $STUDIO_RUNS_DIR or ./runs)")
    add_data_options(data_cmd)
    return parser.parse_args(argv)


def resolve_dataset(args: argparse.Namespace) -> DatasetScan:
    """The data set to use, checked, without the pictures on its exclusion list when the command trains (unless
    --keep-excluded)."""
    folder = args.data or ensure_tutorial_data(args.data_root, download=not args.no_download)
    trains = hasattr(args, "keep_excluded") and not args.keep_excluded
    runs_dir = getattr(args, "runs_dir", None)
    scan = (training_scan(folder, read_exclusions(folder, runs_dir), runs_dir) if trains
            else load_dataset(folder, dataset_dir(folder, runs_dir)))
    counts = scan.counts()
    splits = ", ".join(f"{split} {sum(per_class.values())}" for split, per_class in counts.items())
    print(f"Data: {scan.root} - {len(scan.classes)} classes ({', '.join(scan.classes)}); {splits} pictures")
    if scan.skipped:
        print(f"Skipped {len(scan.skipped)} file(s) that are not readable pictures:", file=sys.stderr)
        for skipped in scan.skipped:
            print(f"  {skipped.path.relative_to(scan.root)}: {skipped.reason}", file=sys.stderr)
    if scan.excluded:
        print(f"Left out {len(scan.excluded)} picture(s) on the data set's exclusion list (python -m core data "
              "--health shows it; --keep-excluded trains on them)")
    return scan


class StopSignals:
    """Ctrl-C, SIGTERM (a container stop) and SIGHUP (a closed terminal) all cancel the current run cleanly: it
    is saved, marked cancelled, with its best epoch. A second Ctrl-C quits at once, except while a run is being
    saved: the save finishes first. Under torchrun a Ctrl-C reaches each process twice (from the terminal, and
    passed on by torchrun), so there a second one does not quit: torchrun ends the processes itself if they take
    longer than its grace period (30 s)."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self, quit_on_second: bool = True, announce: bool = True) -> None:
        self.received: int | None = None
        self.quit_on_second, self.announce = quit_on_second, announce
        self._saving = False
        self._quit_after_save = False
        self._pid = os.getpid()
        for number in self.SIGNALS:
            signal.signal(number, self._handle)

    @property
    def pressed(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or 0)

    def _handle(self, number: int, _frame) -> None:
        if os.getpid() != self._pid:
            return  # a data-loader worker: the main process handles it
        if self.received is None:
            self.received = number
            if self.announce:
                _say(f"\n{signal.Signals(number).name}: cancelling after this batch; the run is saved"
                     + (" (Ctrl-C again to quit at once)...\n" if self.quit_on_second else "...\n"))
        elif not self.quit_on_second:
            return
        elif self._saving:
            self._quit_after_save = True
            _say("\nSaving the run first; quitting right after.\n")
        elif number == signal.SIGINT:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """While a run is written, a second signal waits for the save to finish."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._quit_after_save:
            raise KeyboardInterrupt


def add_lr_find_command(commands) -> None:
    lr_find_cmd = commands.add_parser("lr-find", help="sweep the learning rate over about 100 steps and suggest one "
                                      "(the model is left as it was)")
    lr_find_cmd.add_argument("--scenario", default="finetune", choices=list(SCENARIOS), help="(default: finetune)")
    add_recipe_options(lr_find_cmd)
    lr_find_cmd.add_argument("--seed", type=int, default=TrainConfig().seed)
    lr_find_cmd.add_argument("--start-lr", type=float, default=START_RATE, help=f"(default: {START_RATE:g})")
    lr_find_cmd.add_argument("--end-lr", type=float, default=END_RATE, help=f"(default: {END_RATE:g})")
    lr_find_cmd.add_argument("--steps", type=int, default=STEPS, help=f"(default: {STEPS})")
    add_data_options(lr_find_cmd, training=True)


def add_backbones_command(commands) -> None:
    backbones_cmd = commands.add_parser("backbones", help="list the backbones: every torchvision ImageNet classifier, "
                                        "with its size, ImageNet accuracy, input and whether its weights are here")
    backbones_cmd.add_argument("--family", help=f"only this family: {', '.join(families())}")
    backbones_cmd.add_argument("--max-params", type=float, metavar="MILLIONS", help="only those with at most this "
                               "many million parameters")
    backbones_cmd.add_argument("--search", help="only those whose name holds this")
    backbones_cmd.add_argument("--weights", type=Path, help="a weights file or folder to look in first (default: "
                               "$STUDIO_WEIGHTS, then torchvision's cache)")


def command_backbones(args: argparse.Namespace) -> int:
    chosen = select(args.family, args.max_params, args.search)
    if not chosen:
        print("No backbone matches: python -m core backbones lists them all.")
        return 1
    rows = catalogue_rows(chosen, args.weights)
    print_table([list(rows[0])] + [[_cell(value) for value in row.values()] for row in rows])
    print(f"{len(rows)} of {len(BACKBONES)} backbones. The preprocessing, sizes and accuracies are torchvision's, "
          "for the ImageNet weights the studio starts from.")
    return 0


def _cell(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _say(text: str) -> None:
    os.write(2, text.encode(errors="replace"))  # not print: a signal may arrive while print is writing


def recipe(args: argparse.Namespace, scenario: str, seed: int | None) -> TrainConfig:
    return TrainConfig.from_settings(vars(args), scenario=scenario, seed=seed, fast=not args.tutorial_loop)


def command_train(args: argparse.Namespace) -> int:
    """Train each scenario and save its run. Under torchrun every process trains each run together (core.distributed)
    and process 0 alone prints and saves."""
    world: World = args.world
    configs = [recipe(args, scenario, args.seed) for scenario in SCENARIO_GROUPS.get(args.scenario, [args.scenario])]
    stop = StopSignals(quit_on_second=not world.joined, announce=world.main)
    print(f"Device: {Trainer(configs[0], world=world).strategy.device}{processes_text(world)}")
    if world.main:
        check_runs_dir(args.runs_dir, args.backbone)
    scan = resolve_dataset(args)
    check_same_data(world, scan)
    records: list[RunRecord] = []
    lost = None
    for config in configs:
        if world.any(stop.pressed):
            break
        result = train_with_progress_bar(
            config.scenario, Trainer(config, world=world).plan(scan), stop,
            lambda on_batch, on_epoch, config=config: Trainer(config, args.weights, Callbacks(on_batch, on_epoch),
                                                              world).train(scan), show=world.main)
        lost = result.placement.interruption
        if world.main:
            with stop.saving():
                record = save_run(result, scan, args.runs_dir)
                print(f"Saved {record.status} run {record.path} (weights: {record.weights_source.describe()})")
                if record.status == "diverged":
                    print(f"warning: the loss became NaN or infinite after {len(record.history)} finished epoch(s); "
                          "the run keeps its best epoch. Try a smaller --lr.", file=sys.stderr)
                if not record.trained:
                    print(f"note: no epoch finished, so run {record.id} cannot classify anything; it is never "
                          "chosen as the latest run.", file=sys.stderr)
            records.append(record)
        if lost:
            saved = ("process 0 saved the run as cancelled, with its best epoch" if world.main
                     else "process 0 saves the run")
            print(f"error: {world.name()}: training stopped: {lost} ({saved}).", file=sys.stderr)
            break
    if records:
        print_runs(records)
    if lost:
        return 1
    return stop.exit_code if stop.pressed else 0


def processes_text(world: World) -> str:
    return f", {world.size} processes (torchrun, torch.distributed {world.backend})" if world.joined else ""


def check_same_data(world: World, scan: DatasetScan) -> None:
    """Every process must train on the same pictures, with the same labels: its share is an index into them."""
    if not world.several:
        return
    listing = json.dumps([scan.classes, {split: [[scan.relative(path), label] for path, label in samples]
                                         for split, samples in scan.samples.items()}])
    world.check_same(hashlib.sha256(listing.encode()).hexdigest(),
                     "Process {rank} sees another data set than process 0 (other pictures, classes or exclusion "
                     "list). Give every machine the same data set at the same path (--data), and the same exclusion "
                     "list (it is kept beside the runs: --runs-dir).")


def train_with_progress_bar(label: str, plan: ScenarioPlan, stop: StopSignals,
                            trainer: Callable[[OnBatch, OnEpoch], TrainResult], leave: bool = True,
                            show: bool = True) -> TrainResult:
    """Run `trainer(on_batch, on_epoch)` with a progress bar of the `plan`'s batches (unless not `show`n) and the time
    left, measured phase by phase (core.eta); a stop signal cancels it."""
    bars: list[tqdm] = []  # opened at the first batch, so that weight loading messages come first
    estimator, status = Estimator([plan]), {"text": ""}
    estimator.start(0)

    def show_status() -> None:
        left = estimator.remaining()
        when = "estimating the time left" if left is None else f"{tqdm.format_interval(left)} left"
        bars[0].set_postfix_str(f"{status['text']}, {when}" if status["text"] else when, refresh=False)

    def on_batch(progress: BatchProgress) -> None:
        if not bars:
            bars.append(tqdm(total=plan.total_batches, desc=f"{label:>15}", unit="batch", dynamic_ncols=True,
                             leave=leave, disable=not show, bar_format=BAR_FORMAT))
        estimator.batch(0, progress)
        if progress.phase == "features" and progress.batch == 1:
            status["text"] = "computing the frozen backbone's features once"
        show_status()
        bars[0].update(1)
        if stop.pressed:
            raise TrainingCancelled

    def on_epoch(stats: EpochStats) -> None:
        status["text"] = f"epoch {stats.epoch} val acc {stats.val_acc:.3f}"
        show_status()

    try:
        return trainer(on_batch, on_epoch)
    finally:
        for bar in bars:
            bar.close()


def command_lr_find(args: argparse.Namespace) -> int:
    """Sweep the rate for what the recipe trains last, then print the suggestion and the curve."""
    config = recipe(args, args.scenario, args.seed)
    scan = resolve_dataset(args)
    stop = StopSignals()
    with tqdm(total=args.steps, desc="learning rate sweep", unit="step", dynamic_ncols=True) as bar:
        def on_step(done: int, _steps: int) -> None:
            bar.update(done - bar.n)
            if stop.pressed:
                raise TrainingCancelled

        try:
            curve = find_learning_rate(config, scan, args.weights, args.start_lr, args.end_lr, args.steps, on_step)
        except TrainingCancelled:
            print("Stopped: no rate suggested; the model was left as it was.", file=sys.stderr)
            return stop.exit_code
    print(f"Swept {len(curve.rates)} rates ({curve.ended}) for {config.scenario} with the {config.recipe} recipe, "
          f"{config.backbone}.")
    print_table([("learning rate", "smoothed loss"), *curve.table()])
    print(f"Suggested learning rate: {curve.suggestion:.2e} (use it with --lr {curve.suggestion:.2g})")
    return 0


def print_runs(records: list[RunRecord]) -> None:
    rows = [record.summary() for record in records]
    print_table([SUMMARY_COLUMNS, *([row[column] for column in SUMMARY_COLUMNS] for row in rows)])


def command_experiment(args: argparse.Namespace) -> int:
    """Train the cells of an experiment not saved yet, or show it. Under torchrun each process trains and saves its
    own share of the cells (core.experiment.share), alone; a frozen backbone's features are computed by all of them
    together first, and process 0 shows the results once every process is done."""
    world: World = args.world
    groups = args.scenario or ["frozen"]
    scenarios = list(dict.fromkeys(name for group in groups for name in SCENARIO_GROUPS.get(group, [group])))
    sizes = [parse_size(text) for text in args.sizes]
    stop = StopSignals(quit_on_second=not world.joined, announce=world.main)
    if args.show and args.name:
        plan = read_plan(args.name, args.runs_dir)
        print_experiment(results(plan, list_runs(args.runs_dir).runs))
        return 0
    scan = resolve_dataset(args)
    plan = experiment_plan(args, scan, scenarios, sizes)
    base = plan.recipe
    if args.show:
        print_experiment(results(read_plan(plan.name, args.runs_dir), list_runs(args.runs_dir).runs))
        return 0
    print(f"Device: {Trainer(base, world=world).strategy.device}{processes_text(world)}")
    check_same_data(world, scan)
    todo, estimate = [], None
    if world.main:
        for backbone in plan.backbones:
            check_runs_dir(args.runs_dir, backbone)
        plan = record_plan(plan, args.runs_dir)
        runs = list_runs(args.runs_dir).runs
        todo = pending(plan, runs, plan.grid())
        estimate = estimate_seconds(plan, scan, todo, runs)
    plan, todo, estimate = world.broadcast((plan, todo, estimate))
    check_same_runs_dir(world, plan, args.runs_dir)
    saved = f"Experiment {plan.name}: {len(plan.grid())} cells, {len(plan.grid()) - len(todo)} already saved"
    print(f"{saved}; {len(todo)} to train, about {duration_text(estimate.seconds)} (from {estimate.basis})." if todo
          else f"{saved}: nothing to train.")
    if stop.pressed:  # while the time was estimated
        print("Stopped before the first cell trained: nothing to save; the cells saved before are kept.",
              file=sys.stderr)
        return stop.exit_code
    runner = ExperimentRunner(plan, scan, args.runs_dir, args.weights, world)
    mine = share(plan, scan, todo, world.size)[world.rank]
    if world.several:
        print(f"Each of the {world.size} processes trains its own cells; process 0 has {len(mine)}.")
        try:
            first = Trainer(plan.config(todo[0]), world=world).plan(scan) if todo else None
            features = replace(first, epochs=0) if first else None  # only its features
            train_with_progress_bar("features", features, stop, lambda on_batch, _on_epoch: runner
                                    .compute_shared_features(todo, on_batch), show=world.main)
        except TrainingCancelled:
            mine = []
    stopped = train_cells(plan, scan, runner, mine, stop, world)
    if stopped is not None:
        return stopped
    world.wait_for_all(seconds=3 * estimate.seconds if estimate else 0)
    print_experiment(results(plan, list_runs(args.runs_dir).runs))
    return stop.exit_code if stop.pressed else 0


def train_cells(plan: ExperimentPlan, scan: DatasetScan, runner: ExperimentRunner, mine: list[Cell],
                stop: StopSignals, world: World) -> int | None:
    """Train and save this process's cells one after another, a line for each; the exit code when stopped while
    the shared features were computed, else None."""
    plans = cell_plans(plan, scan, mine)  # the shared features are counted in the first cell that computes them
    for number, (cell, cell_plan) in enumerate(zip(mine, plans), start=1):
        if stop.pressed:
            break
        try:
            result = train_with_progress_bar(
                f"{number}/{len(mine)}", cell_plan, stop,
                lambda on_batch, on_epoch, cell=cell: runner.train_cell(cell, on_batch, on_epoch), leave=False,
                show=not world.several)
        except TrainingCancelled:  # while the frozen backbone's features were computed, before any epoch
            print(f"Stopped while the frozen backbone's features were computed, before cell {plan.label_of(cell)} "
                  "trained: nothing to save; the cells saved before are kept.", file=sys.stderr)
            return stop.exit_code if stop.pressed else 1
        with stop.saving():
            record = runner.save(cell, result)
        best = record.best_val()
        process = f"[process {world.rank}] " if world.several else ""
        print(f"{process}{number}/{len(mine)} {plan.label_of(cell)}: {record.status}, "
              f"best val acc {accuracy_text(best) if best else '-'}, run {record.id}",
              file=sys.stdout if world.main else sys.stderr)
    return None


def experiment_plan(args: argparse.Namespace, scan: DatasetScan, scenarios: list[str],
                    sizes: list[int | None]) -> ExperimentPlan:
    """The experiment the command line asks for: its backbones, recipes, grid and the pictures left out."""
    backbones = args.backbone or [TrainConfig.backbone]
    configs = recipe_configs({**vars(args), "backbone": backbones[0]}, args.recipe or ["tutorial"], scenarios,
                             seed=args.seeds[0], fast=not args.tutorial_loop)
    excluded = [scan.relative(path) for path in scan.excluded]
    return ExperimentPlan(args.name or default_name(scan.root, list(configs.values()), excluded, backbones),
                          str(scan.root), next(iter(configs.values())), scenarios, args.seeds, sizes,
                          excluded=excluded, recipes=configs, backbones=backbones)


def check_same_runs_dir(world: World, plan: ExperimentPlan, runs_dir: Path | None) -> None:
    """Every process must save its cells where process 0 looks for them: one runs folder that all of them share."""
    if not world.several:
        return
    try:
        seen = read_plan(plan.name, runs_dir).to_dict()
    except RunError:
        seen = None
    world.check_same(seen, "Process {rank} does not see the runs folder that process 0 keeps the experiment in. "
                     "Over several machines, an experiment needs one runs folder that all of them share (--runs-dir "
                     "on a shared file system): each process saves its cells there, and a rerun finds them all.")


def print_experiment(outcome: ExperimentResults) -> None:
    """The experiment's table of means over seeds with 95% intervals, and the paired differences per size."""
    planned = len(outcome.plan.cells())
    print(f"\nExperiment {outcome.plan.name}: {outcome.done} of {planned} cells saved"
          + ("" if outcome.done == planned else " (run the same command again to train the others)") + ".")
    if not outcome.rows:
        return
    has_test = any(row.test for row in outcome.rows)
    several = outcome.plan.several_backbones
    header = ["backbone · scenario" if several else "scenario", "per class", "seeds", "best val acc (optimistic)",
              "final val acc", *(["test acc"] if has_test else []), "s / run", *(["params (M)"] if several else [])]
    rows = [[row.scenario, f"{size_text(row.pictures_per_class)} ({row.train_pictures:g})", len(row.seeds),
             mean_text(row.best_val), mean_text(row.final_val),
             *([mean_text(row.test) if row.test else "-"] if has_test else []), f"{row.seconds:.1f}",
             *([f"{row.parameters / 1e6:.1f}"] if several else [])]
            for row in outcome.rows]
    print_table([header, *rows])
    print(f"Means over seeds, [95% interval] (Student t, given from {FEWEST_SEEDS} seeds on). Best val acc is each "
          "run's best epoch, chosen on the validation pictures, so optimistic. S / run is a run's time on its own: its "
          "training, and computing the frozen features that the experiment's cells share.")
    if several:
        print("\nBest trade-offs (no other is more accurate, best epoch, at no more cost):")
        for size in dict.fromkeys(row.pictures_per_class for row in outcome.rows):
            for cost, unit in (("seconds", "s / run"), ("parameters", "parameters")):
                front = " < ".join(row.scenario for row in outcome.trade_offs(size, cost))
                print(f"  {size_text(size)} per class, by {unit}: {front}")
    if outcome.comparisons:
        print("\nPaired differences (bootstrap over seeds and pictures):")
        for comparison in outcome.comparisons:
            print(f"  {size_text(comparison.pictures_per_class)} per class: {comparison.text}")


def print_table(rows: list[tuple | list]) -> None:
    """Rows of cells as aligned columns, the first row a header."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def command_predict(args: argparse.Namespace) -> int:
    run = find_run(args.run, args.runs_dir)
    predictor = load_predictor(run, pick_device(args.device))
    best = run.best_val()
    print(f"Run: {run.id} ({run.scenario}, {run.backbone}, best val acc {accuracy_text(best) if best else '-'})")
    failed = 0
    for image in args.images:
        try:
            prediction = predictor.predict(image)
        except StudioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        others = ", ".join(f"{name} {p:.3f}" for name, p in prediction.probabilities.items()
                           if name != prediction.top_class)
        print(f"{image}: {prediction.top_class} {prediction.top_probability:.3f} ({others})")
    return 1 if failed else 0


def command_runs(args: argparse.Namespace) -> int:
    if args.show:
        show_runs([find_run(reference, args.runs_dir) for reference in args.show])
        return 0
    listing = list_runs(args.runs_dir)
    for recovered in listing.recovered:
        print(f"note: recovered {recovered}, whose saving had been cut off", file=sys.stderr)
    for damaged in listing.damaged:
        print(f"warning: skipped {damaged.path}: {damaged.reason}", file=sys.stderr)
    if not listing.runs:
        print("No runs yet. Train one with: python -m core train")
        return 0
    print_runs(listing.runs)
    return 0


def show_runs(runs: list[RunRecord]) -> None:
    """The runs' summary rows, their per-class metrics side by side, their confusion matrices, and for the first two
    the validation pictures on which they disagree."""
    print_runs(runs)
    print("\nRecipe, phase by phase:")
    for number, run in enumerate(runs, start=1):
        print(f"  [{number}] {run.id}: {run.config.recipe}")
        for phase in run.phase_records():
            rates = ", ".join(f"{group} {rate:.1e}" for group, rate in phase.rates.items())
            length = f"{phase.epochs} epoch(s)" if phase.epochs else "to convergence"
            print(f"      {phase.name}: {phase.trains}, {length}, {phase.optimizer}, {phase.schedule}"
                  + (f", peak rates {rates}" if rates else "") + (f"; {phase.outcome}" if phase.outcome else ""))
    print("\nCompiled training:")
    for number, run in enumerate(runs, start=1):
        print(f"  [{number}] {run.id}: {run.compilation.describe() if run.compilation else 'not recorded (older run)'}")
    print("\nTrained on:")
    for number, run in enumerate(runs, start=1):
        lines = run.placement.describe() if run.placement else ["not recorded (older run)"]
        print(f"  [{number}] {run.id}: " + "\n      ".join(lines))
    numbered = [(number, run) for number, run in enumerate(runs, start=1) if run.val_predictions]
    if not numbered:
        print("\nNo validation predictions were saved with these runs (no epoch finished).")
        return
    print("\nPer class, on the validation pictures (kept weights): precision / recall / F1")
    for number, run in numbered:
        print(f"  [{number}] {run.id} ({run.scenario})")
    header = ["class", "pictures", *(f"[{number}] P / R / F1" for number, _ in numbered)]
    metrics = [class_metrics(run.val_predictions, run.class_names) for _, run in numbered]
    rows = [[row[0].name, row[0].support, *(f"{m.precision:.3f} / {m.recall:.3f} / {m.f1:.3f}" for m in row)]
            for row in zip(*metrics)] if len({tuple(run.class_names) for _, run in numbered}) == 1 else []
    if rows:
        print_table([header, *rows])
    else:
        for (number, _), per_class in zip(numbered, metrics):
            print(f"[{number}]")
            print_table([["class", "pictures", "P / R / F1"], *([m.name, m.support, f"{m.precision:.3f} / "
                         f"{m.recall:.3f} / {m.f1:.3f}"] for m in per_class)])
    for number, run in numbered:
        counts = run.val_predictions.confusion(len(run.class_names))
        print(f"\n[{number}] confusion matrix: rows are the actual class, columns the predicted one")
        print_table([["actual \\ predicted", *run.class_names],
                     *([name, *row] for name, row in zip(run.class_names, counts))])
    if len(numbered) >= 2:
        (a, first), (b, second) = numbered[:2]
        parted = disagreements(first, second)
        if parted is None:
            print(f"\n[{a}] and [{b}] share no validation picture: nothing to pair.")
            return
        print(f"\nOf {parted.pictures} validation pictures, [{a}] alone is right on {len(parted.first_only)}, [{b}] "
              f"alone on {len(parted.second_only)}, both are wrong on {parted.both_wrong} (McNemar's exact test: "
              f"p = {parted.p_value:.3g}).")
        for who, items in ((a, parted.first_only), (b, parted.second_only)):
            for item in items:
                print(f"  [{who}] alone right: {item.file} (is {first.class_names[item.label]}; [{a}] says "
                      f"{first.class_names[item.first]}, [{b}] says {first.class_names[item.second]})")


def command_export(args: argparse.Namespace) -> int:
    run = find_run(args.run, args.runs_dir)
    result = export_run(run, args.format, args.out)
    skipped = len(result.skipped_pictures)
    if result.pictures_checked:
        checked = (f"matches PyTorch on {result.pictures_checked} validation pictures "
                   f"(largest probability difference {result.max_difference:.1e})")
        if skipped:
            checked += f"; {skipped} skipped (missing or unreadable)"
    elif skipped:
        checked = (f"not checked on validation pictures: all {skipped} were missing or unreadable "
                   "(checked on a plain grey picture only)")
    else:
        checked = "not checked: the run has no validation pictures (checked on a plain grey picture only)"
    print(f"Wrote {result.path} in {result.seconds:.1f} s; {checked}.")
    return 0


def command_data(args: argparse.Namespace) -> int:
    scan = resolve_dataset(args)
    for split, per_class in scan.counts().items():
        print(f"  {split}: " + ", ".join(f"{name} {count}" for name, count in per_class.items()))
    if args.exclude or args.include:
        known = {scan.relative(path) for pictures in scan.samples.values() for path, _ in pictures}
        unknown = [file for file in args.exclude if file not in known]
        if unknown:
            raise ConfigError(f"{', '.join(unknown)}: not a picture of {scan.root}. Give paths under the data set's "
                              "folder, as --health lists them (for example train/ants/0013035.jpg).")
        change_exclusions(scan.root, args.exclude, args.include, args.runs_dir)
    if args.health:
        print_health(check_health_with_progress(scan, args))
    excluded = read_exclusions(scan.root, args.runs_dir)
    print(f"\nExclusion list: {len(excluded)} picture(s) left out of training" + (":" if excluded else
          " (python -m core data --exclude FILE adds one)."))
    for file in excluded:
        print(f"  {file}")
    return 0


def check_health_with_progress(scan: DatasetScan, args: argparse.Namespace) -> HealthReport:
    bars: dict[str, tqdm] = {}
    words = {"reading": "reading files", "features": "ImageNet features", "labels": "label check"}

    def progress(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase) or bars.setdefault(phase, tqdm(total=total, desc=f"{words[phase]:>17}", unit="picture"
                                                              if phase != "labels" else "step", leave=False))
        bar.update(done - bar.n)

    try:
        return check_health(scan, args.runs_dir, args.weights, args.backbone, str(pick_device(args.device)), progress)
    finally:
        for bar in bars.values():
            bar.close()


def print_health(report: HealthReport) -> None:
    print(f"\nHealth of {report.data_dir}: {report.pictures} pictures"
          + (f", compared by {BACKBONES[report.backbone].title}'s ImageNet features" if report.backbone else "")
          + f" ({report.seconds:.1f} s when it was made; kept beside the runs until a picture changes).")
    for warning in report.warnings or ["No warning on class counts."]:
        print(f"  {warning}")
    if report.unavailable:
        print(f"  {report.unavailable}")
    exact = report.exact_duplicates
    for title, counted, pairs in (
            ("Exact duplicates (the same file content)", pairs_text(len(exact), exact), exact),
            (f"Near-duplicates (feature similarity at least {NEAR_DUPLICATE})", report.near_duplicates_text(),
             report.near_duplicates)):
        print(f"\n{title}: {counted}")
        for pair in pairs[:MOST_SHOWN]:
            print(f"  {pair_text(pair)}")
        if len(pairs) > MOST_SHOWN:
            print(f"  ... and {len(pairs) - MOST_SHOWN} more")
    if report.most_similar:
        print("\nThe most similar other pairs, for a look (not counted as duplicates):")
        for pair in report.most_similar:
            print(f"  {pair_text(pair)}")
    if report.backbone and not report.unavailable:
        flagged = sum(issue.flagged for issue in report.label_issues)
        print(f"\nLabel suspects: {len(report.label_issues)} picture(s) that a classifier trained on the other "
              f"pictures puts in another class; cleanlab finds {flagged} of them likely label errors.")
        if report.label_issues:
            print_table([["file", "given", "suggested", "label quality", "cleanlab"],
                         *([issue.file, issue.given, issue.suggested, f"{issue.quality:.3f}",
                            "likely error" if issue.flagged else "-"] for issue in report.label_issues[:MOST_SHOWN])])


MOST_SHOWN = 20  # pairs and suspects printed by data --health


def pair_text(pair: DuplicatePair) -> str:
    notes = [note for note, applies in (("across splits", pair.across_splits),
                                        ("in different classes", pair.classes_differ)) if applies]
    return f"{pair.first} = {pair.second} ({pair.similarity:.3f}{'; ' + ', '.join(notes) if notes else ''})"


COMMANDS = {"train": command_train, "experiment": command_experiment, "predict": command_predict,
            "runs": command_runs, "export": command_export, "data": command_data, "lr-find": command_lr_find,
            "backbones": command_backbones}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.world = SINGLE
    try:
        if args.command in ("train", "experiment"):
            args.world = start(args.device)  # torchrun's processes meet here; alone, nothing happens
        quiet = contextlib.nullcontext() if args.world.main else contextlib.redirect_stdout(open(os.devnull, "w"))
        with quiet:  # only process 0 prints; every process's errors go to stderr
            return COMMANDS[args.command](args)
    except (StudioError, ValueError) as exc:
        hint = HINTS.get(getattr(exc, "setting", None))
        who = f"{args.world.name()}: " if args.world.several else ""
        print(f"error: {who}{exc}" + (f" {hint}" if hint else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted; saved runs are kept, nothing half-written is left.", file=sys.stderr)
        return 130
    finally:
        finish(args.world)
