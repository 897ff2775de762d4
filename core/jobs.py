"""A background training job: one at a time per process, readable from any thread while it runs.

The dashboard keeps one TrainingJobs object for the whole server, so every browser tab sees the
same job, and a second Start while one runs is refused with the reason.
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from core.data import load_dataset
from core.errors import JobRefused, StudioError, TrainingCancelled
from core.runs import save_run
from core.train import BatchProgress, EpochStats, TrainConfig, train


@dataclass
class JobRequest:
    data_dir: Path
    configs: list[TrainConfig]
    runs_dir: Path | None = None
    weights: str | Path | None = None


@dataclass
class ScenarioState:
    scenario: str
    status: str = "waiting"  # waiting, running, completed, cancelled, failed, skipped
    history: list[EpochStats] = field(default_factory=list)
    run_id: str | None = None


@dataclass
class JobSnapshot:
    """A copy of the job's state at one moment; safe to read while training goes on."""

    job_id: int
    state: str  # running, completed, cancelled, failed
    started: float
    backbone: str
    data_dir: str
    scenarios: list[ScenarioState]
    current: int = 0  # index into scenarios
    progress: BatchProgress | None = None
    fraction: float = 0.0  # of the whole job
    finished: float | None = None
    message: str = ""
    setting: str | None = None  # of a failed job's StudioError: the setting that would fix it
    cancel_requested: bool = False

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    @property
    def eta_seconds(self) -> float | None:
        if self.state != "running" or self.fraction < 0.02:
            return None
        return self.elapsed * (1 - self.fraction) / self.fraction

    @property
    def running(self) -> bool:
        return self.state == "running"


class TrainingJobs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job: JobSnapshot | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0

    def snapshot(self) -> JobSnapshot | None:
        with self._lock:
            return copy.deepcopy(self._job)

    def start(self, request: JobRequest) -> int:
        """Start training in the background and return the job id, or raise JobRefused."""
        if not request.configs:
            raise StudioError("Choose at least one scenario to train.")
        with self._lock:
            if self._job and self._job.running:
                job = self._job
                raise JobRefused(
                    f"A job started at {time.strftime('%H:%M:%S', time.localtime(job.started))} is still training "
                    f"({job.scenarios[job.current].scenario}, {job.backbone}). Wait for it to finish or cancel it; "
                    "only one job trains at a time so that runs never compete for the machine."
                )
            self._count += 1
            self._cancel.clear()
            self._job = JobSnapshot(
                job_id=self._count, state="running", started=time.time(), backbone=request.configs[0].backbone,
                data_dir=str(request.data_dir), scenarios=[ScenarioState(c.scenario) for c in request.configs],
            )
            self._thread = threading.Thread(target=self._run, args=(request,), name="training-job", daemon=True)
            self._thread.start()
            return self._count

    def cancel(self) -> None:
        with self._lock:
            if self._job and self._job.running:
                self._job.cancel_requested = True
                self._cancel.set()

    def wait(self, timeout: float | None = None) -> JobSnapshot | None:
        thread = self._thread
        if thread:
            thread.join(timeout)
        return self.snapshot()

    # ------------------------------------------------------------ the worker thread

    def _update(self, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._job, name, value)

    def _run(self, request: JobRequest) -> None:
        try:
            scan = load_dataset(request.data_dir)
            count = len(request.configs)
            for index, config in enumerate(request.configs):
                if self._cancel.is_set():
                    self._set_scenario(index, status="skipped")
                    continue
                self._update(current=index)
                self._set_scenario(index, status="running")
                result = train(config, scan, request.weights,
                               on_batch=lambda progress, i=index: self._on_batch(progress, i, count),
                               on_epoch=lambda stats, i=index: self._on_epoch(stats, i))
                record = save_run(result, scan, request.runs_dir)
                self._set_scenario(index, status=result.status, run_id=record.id)
            if self._cancel.is_set():
                self._update(state="cancelled", finished=time.time())
            else:
                self._update(state="completed", finished=time.time(), fraction=1.0)
        except Exception as exc:  # the job must end with a message the page can show, whatever happened
            message = str(exc) if isinstance(exc, (StudioError, ValueError)) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, (StudioError, ValueError)):
                traceback.print_exc()
            with self._lock:
                for scenario in self._job.scenarios:
                    if scenario.status in ("running", "waiting"):
                        scenario.status = "failed" if scenario.status == "running" else "skipped"
                self._job.state, self._job.finished, self._job.message = "failed", time.time(), message
                self._job.setting = getattr(exc, "setting", None)

    def _set_scenario(self, index: int, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._job.scenarios[index], name, value)

    def _on_batch(self, progress: BatchProgress, index: int, count: int) -> None:
        if self._cancel.is_set():
            raise TrainingCancelled
        within_epoch = progress.batch / progress.batches if progress.phase == "train" else 1.0
        fraction = (index + (progress.epoch - 1 + within_epoch) / progress.epochs) / count
        self._update(progress=progress, fraction=min(fraction, 1.0))

    def _on_epoch(self, stats: EpochStats, index: int) -> None:
        with self._lock:
            self._job.scenarios[index].history.append(stats)
