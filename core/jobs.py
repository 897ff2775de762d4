"""A background training job: one at a time per process, readable from any thread while it runs.

The dashboard keeps one TrainingJobs object for the whole server, so every browser tab sees the
same job, and a second Start while one runs is refused with the reason. A shared server gives the
manager limits (epochs, pictures, minutes) that every job is held to, and names each job's owner:
only the owner may cancel a job that has one.

A job trains a list of scenarios, or the cells of an experiment's grid that have no saved run yet
(core.experiment): each cell is then one of the job's `scenarios`, named by its label.

Each scenario runs on its own: one that fails (say, its pretrained weights cannot be had) is marked "failed" with
its own message and setting, and the job goes on to the next. The job ends "completed" when at least one scenario
did not fail (the failed ones are listed by `JobSnapshot.failures`), "failed" only when every scenario failed or
the data set could not be loaded (its message and setting are then the first failure's), and "cancelled" when
Cancel or the time limit stopped it: the scenarios not started are then skipped.

The time left comes from core.eta: seconds per batch measured phase by phase, with the injectable `clock`.
"""
from __future__ import annotations

import atexit
import copy
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from core.data import SPLITS, TEST_SPLIT, DatasetScan
from core.errors import JobRefused, StudioError, TrainingCancelled
from core.eta import Estimator
from core.exclusions import training_scan
from core.experiment import Cell, ExperimentPlan, ExperimentRunner, cell_plans, pending, record_plan
from core.results import ScenarioPlan
from core.runs import check_runs_dir, list_runs, save_run
from core.train import BatchProgress, Callbacks, EpochStats, TrainConfig, Trainer

SAVE_BEFORE_EXIT_S = 120  # the longest a stopping server waits for the current batch and the save


@dataclass
class JobRequest:
    data_dir: Path
    configs: list[TrainConfig]  # for an experiment: one per backbone, scenario and recipe (limits are checked on them)
    runs_dir: Path | None = None
    weights: str | Path | None = None
    deadline: float | None = None  # time.time() past which the job is cancelled, keeping its work
    experiment: ExperimentPlan | None = None  # train the cells of its grid that have no saved run, not `configs`
    excluded: list[str] = field(default_factory=list)  # pictures to leave out (an experiment's are its plan's)


@dataclass(frozen=True)
class JobLimits:
    """What one job may ask for; None means no limit. A shared dashboard sets them for every visitor."""

    max_epochs: int | None = None  # per scenario
    max_pictures: int | None = None  # picture files in train/ and val/ together
    max_minutes: float | None = None  # wall clock per job; past it the job is cancelled as if Cancel was pressed

    def check(self, request: JobRequest) -> None:
        """Raise JobRefused when `request` asks for more than the limits allow."""
        too_long = [c for c in request.configs if self.max_epochs is not None and c.epochs > self.max_epochs]
        if too_long:
            raise JobRefused(f"{too_long[0].epochs} epochs is more than this studio allows: at most "
                             f"{self.max_epochs} epochs per scenario. Choose {self.max_epochs} or fewer.")
        if self.max_pictures is not None:
            count = count_pictures(request.data_dir, stop_after=self.max_pictures)
            if count > self.max_pictures:
                raise JobRefused(f"The data set has more than {self.max_pictures} pictures in train/, val/ and test/; "
                                 f"this studio trains on at most {self.max_pictures}. Choose a smaller data set.")


def count_pictures(data_dir: Path, stop_after: int | None = None) -> int:
    """Picture files (by their extension) in data_dir's train/, val/ and test/, counted up to one past `stop_after`."""
    count = 0
    for split in (*SPLITS, TEST_SPLIT):
        for path in Path(data_dir, split).rglob("*"):
            if path.suffix.lower() in IMG_EXTENSIONS and not path.name.startswith(".") and path.is_file():
                count += 1
                if stop_after is not None and count > stop_after:
                    return count
    return count


@dataclass
class ScenarioState:
    """One run of the job: a scenario, or an experiment's cell."""

    scenario: str
    status: str = "waiting"  # waiting, running, completed, cancelled, failed, skipped
    history: list[EpochStats] = field(default_factory=list)
    run_id: str | None = None
    message: str = ""  # why it failed
    setting: str | None = None  # of its StudioError: the setting that would fix it
    cell: Cell | None = None  # of an experiment
    cell_label: str = ""  # the cell's, as its experiment names it (ExperimentPlan.label_of)

    @property
    def label(self) -> str:
        return self.cell_label or self.scenario


@dataclass
class JobSnapshot:
    """A copy of the job's state at one moment; safe to read while training goes on."""

    job_id: int
    state: str  # running, completed, cancelled, failed
    started: float
    data_dir: str
    scenarios: list[ScenarioState]
    current: int = 0  # index into scenarios
    configs: list[TrainConfig] = field(default_factory=list)  # the recipe of each scenario, in order
    progress: BatchProgress | None = None  # the current scenario's latest batch; None before its first
    fraction: float = 0.0  # of the whole job
    eta_seconds: float | None = None  # time left, from measured rates; None while estimating (and once finished)
    finished: float | None = None
    message: str = ""
    setting: str | None = None  # of a failed job's StudioError: the setting that would fix it
    cancel_requested: bool = False
    owner: str | None = None  # who may cancel it; None: anyone
    deadline: float | None = None  # time.time() past which it is cancelled
    time_limited: bool = False  # cancelled because it reached its deadline
    experiment: str | None = None  # the experiment's name, when the job trains one

    @property
    def backbones(self) -> str:
        """The backbones it trains, in order: one, or an experiment's several."""
        return ", ".join(dict.fromkeys(config.backbone for config in self.configs))

    @property
    def minutes_allowed(self) -> float | None:
        return None if self.deadline is None else (self.deadline - self.started) / 60

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    @property
    def failures(self) -> list[ScenarioState]:
        return [scenario for scenario in self.scenarios if scenario.status == "failed"]

    @property
    def running(self) -> bool:
        return self.state == "running"

    def fail(self, message: str, setting: str | None) -> None:
        """The job could not start training: every run is skipped."""
        for scenario in self.scenarios:
            scenario.status = "skipped"
        self.state, self.finished, self.message, self.setting = "failed", time.time(), message, setting

    def settle(self, cancelled: bool) -> None:
        """Every run has ended: the job is cancelled, failed (when all its runs failed) or completed."""
        self.finished, failures = time.time(), self.failures
        if cancelled:
            self.state = "cancelled"
        elif len(failures) == len(self.scenarios):
            self.state, self.message, self.setting = "failed", failures[0].message, failures[0].setting
        else:
            self.state, self.fraction = "completed", 1.0


def job_steps(request: JobRequest, scan: DatasetScan, cells: list[Cell | None]
              ) -> list[tuple[ScenarioPlan, Callable, Callable]]:
    """(plan for the time left, train(on_batch, on_epoch), save(result)) of each run the job trains: each scenario of
    `request.configs`, or each of the experiment's `cells`."""
    if request.experiment is None:
        return [(Trainer(config).plan(scan),
                 lambda on_batch, on_epoch, config=config: Trainer(config, request.weights, Callbacks(
                     on_batch, on_epoch)).train(scan),
                 lambda result: save_run(result, scan, request.runs_dir)) for config in request.configs]
    runner = ExperimentRunner(request.experiment, scan, request.runs_dir, request.weights)
    plans = cell_plans(request.experiment, scan, cells)
    return [(plan, lambda on_batch, on_epoch, cell=cell: runner.train_cell(cell, on_batch, on_epoch),
             lambda result, cell=cell: runner.save(cell, result)) for plan, cell in zip(plans, cells)]


class TrainingJobs:
    def __init__(self, limits: JobLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or JobLimits()
        self.clock = clock  # for the time left; deadlines and the times shown stay on time.time()
        self._lock = threading.Lock()
        self._job: JobSnapshot | None = None
        self._estimator: Estimator | None = None  # the current job's, once its data set is loaded
        self._started = 0.0  # clock() when the current job started
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0
        atexit.register(self._save_before_exit)

    def snapshot(self) -> JobSnapshot | None:
        with self._lock:
            job = copy.deepcopy(self._job)
            if job and job.running and self._estimator:
                job.eta_seconds = self._estimator.remaining()
                spent = self.clock() - self._started
                if job.eta_seconds is not None and spent + job.eta_seconds > 0:
                    job.fraction = min(spent / (spent + job.eta_seconds), 1.0)
            return job

    def start(self, request: JobRequest, owner: str | None = None) -> int:
        """Start training in the background and return the job id, or raise JobRefused (a job is running, or
        the request goes past the limits). Only `owner` may cancel the job when it is given."""
        if not request.configs:
            raise StudioError("Choose at least one scenario to train.")
        self.limits.check(request)
        for backbone in dict.fromkeys(config.backbone for config in request.configs):
            check_runs_dir(request.runs_dir, backbone)
        if request.experiment:
            request.experiment = record_plan(request.experiment, request.runs_dir)
        with self._lock:
            if self._job and self._job.running:
                job = self._job
                raise JobRefused(
                    f"A job started at {time.strftime('%H:%M:%S', time.localtime(job.started))} is still training "
                    f"({job.scenarios[job.current].scenario}, {job.backbones}). Wait for it to finish or cancel it; "
                    "only one job trains at a time so that runs never compete for the machine."
                )
            states = [ScenarioState(c.scenario) for c in request.configs]
            if request.experiment:
                cells = pending(request.experiment, list_runs(request.runs_dir).runs, request.experiment.grid())
                if not cells:
                    raise StudioError(f"Every cell of experiment {request.experiment.name} is saved already: its "
                                      "results are shown. Add seeds or sizes to train more.")
                states = [ScenarioState(cell.scenario, cell=cell, cell_label=request.experiment.label_of(cell))
                          for cell in cells]
            self._count += 1
            self._cancel.clear()
            self._estimator, self._started = None, self.clock()
            started = time.time()
            limit = started + self.limits.max_minutes * 60 if self.limits.max_minutes is not None else math.inf
            deadline = min(request.deadline or math.inf, limit)
            self._job = JobSnapshot(
                job_id=self._count, state="running", started=started,
                data_dir=str(request.data_dir), scenarios=states, owner=owner,
                deadline=None if deadline == math.inf else deadline, configs=list(request.configs),
                experiment=request.experiment.name if request.experiment else None,
            )
            self._thread = threading.Thread(target=self._run, args=(request,), name="training-job", daemon=True)
            self._thread.start()
            return self._count

    def cancel(self, owner: str | None = None) -> None:
        """Stop the running job after its current batch; it keeps its work. A job with an owner may only be
        cancelled by that owner: anyone else gets JobRefused."""
        with self._lock:
            if self._job and self._job.running:
                if self._job.owner is not None and owner != self._job.owner:
                    raise JobRefused(f"Job {self._job.job_id} was started by someone else; only they can cancel it.")
                self._job.cancel_requested = True
                self._cancel.set()

    def wait(self, timeout: float | None = None) -> JobSnapshot | None:
        thread = self._thread
        if thread:
            thread.join(timeout)
        return self.snapshot()

    def _save_before_exit(self) -> None:
        """When the process ends normally (the dashboard's server stopped by Ctrl-C or SIGTERM), a running job
        is cancelled and its run saved, as Cancel does, before the interpreter stops its thread."""
        if self._job and self._job.running:
            self._cancel.set()
            self.wait(SAVE_BEFORE_EXIT_S)

    # ------------------------------------------------------------ the worker thread

    def _run(self, request: JobRequest) -> None:
        try:
            scan = training_scan(request.data_dir, request.experiment.excluded if request.experiment
                                 else request.excluded, request.runs_dir)
            steps = job_steps(request, scan, [state.cell for state in self._job.scenarios])
            estimator = Estimator([plan for plan, _, _ in steps], self.clock)
        except Exception as exc:  # the job must end with a message the page can show, whatever happened
            with self._lock:
                self._job.fail(*_describe(exc))
            return
        with self._lock:
            self._estimator = estimator
        count = len(steps)
        for index, (_, train_step, save_step) in enumerate(steps):
            if self._cancel.is_set():
                self._set_scenario(index, status="skipped")
                continue
            with self._lock:
                self._job.current, self._job.progress = index, None
                self._job.scenarios[index].status = "running"
                estimator.start(index)
            try:  # each scenario on its own: one that fails does not keep the others from training
                result = train_step(lambda progress, i=index: self._on_batch(progress, i, count),
                                    lambda stats, i=index: self._on_epoch(stats, i))
                record = save_step(result)
                changes = {"status": result.status, "run_id": record.id}
            except Exception as exc:
                message, setting = _describe(exc)
                changes = {"status": "failed", "message": message, "setting": setting}
            with self._lock:
                for name, value in changes.items():
                    setattr(self._job.scenarios[index], name, value)
                self._job.progress = None  # never show a finished scenario's last batch
                estimator.finish(index)
        with self._lock:
            self._job.settle(cancelled=self._cancel.is_set())

    def _set_scenario(self, index: int, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._job.scenarios[index], name, value)

    def _on_batch(self, progress: BatchProgress, index: int, count: int) -> None:
        with self._lock:
            if self._job.deadline is not None and time.time() >= self._job.deadline and not self._cancel.is_set():
                self._job.time_limited = self._job.cancel_requested = True
                self._cancel.set()
        if self._cancel.is_set():
            raise TrainingCancelled
        within_epoch = progress.batch / progress.batches if progress.phase == "train" else 1.0
        fraction = (index + max(progress.epoch - 1 + within_epoch, 0) / progress.epochs) / count
        with self._lock:
            self._job.progress, self._job.fraction = progress, min(fraction, 1.0)
            if self._estimator:
                self._estimator.batch(index, progress)

    def _on_epoch(self, stats: EpochStats, index: int) -> None:
        with self._lock:
            self._job.scenarios[index].history.append(stats)


def _describe(exc: Exception) -> tuple[str, str | None]:
    """(message, setting) of an error for the page; an unexpected one is named by its type, its traceback printed."""
    if isinstance(exc, (StudioError, ValueError)):
        return str(exc), getattr(exc, "setting", None)
    traceback.print_exc()
    return f"{type(exc).__name__}: {exc}", None
