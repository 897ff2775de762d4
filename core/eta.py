"""Time left for a training job, from seconds per batch measured phase by phase.

A scenario runs its phases in turn: "features" once (a frozen backbone's features cached before epoch 1, on the
fast path only), then `epochs` times "train" and "val". Phases differ a hundredfold in the time a batch takes
(the head alone on cached features against the whole network forward and backward), so each is timed on its own:

* The running scenario's phases use their own seconds per batch, averaged over the last epoch's worth of batches.
  The first WARM_UP batches of each phase are left out of it (the first passes through a network are slower:
  measured 0.09 s against 0.04 s for a batch of MobileNetV2 features on CPU), unless the phase has no others.
* A phase not timed yet (the next scenario's, or this scenario's val during its first train epoch) takes the rate
  measured for the same kind of work earlier in the job, per picture: the backbone forward (features, val),
  frozen training (forward, head backward) and training every layer, counted as 1, 1 and 3 forward passes. The
  head alone on cached features is negligible next to a backbone until it is measured, and counts as 0.
* Each scenario's setup (model built, pictures decoded), from its start to its first batch, is measured too;
  scenarios not started yet are given the average setup measured so far.
* A recipe's head epochs (fine-tune's first: the head alone on cached features) are timed apart from the epochs
  that train the backbone, as the head's kinds of work.

`remaining()` is None until the backbone's speed is measured at all: the page then says it is estimating.
Not thread-safe: TrainingJobs calls it under its lock.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.results import FORWARD_PASSES, BatchProgress, ScenarioPlan

PHASES = ("features", "train", "val")
HEAD_KINDS = ("head-train", "head-val")  # the head on cached features: 0 until measured
WARM_UP = 2  # batches of each phase not timed


@dataclass
class _Timing:
    started: float
    last: float | None = None  # clock at the latest batch
    where: BatchProgress | None = None  # the latest batch
    seconds: dict[str, deque] = field(default_factory=dict)  # phase: the latest seconds per batch
    seen: dict[str, int] = field(default_factory=dict)  # phase: batches ended so far


class Estimator:
    """Fed the job's batches as they end (`batch`), and told when each scenario starts and ends; says how long
    the whole job has left."""

    def __init__(self, plans: list[ScenarioPlan], clock: Callable[[], float] = time.monotonic) -> None:
        self.plans = plans
        self.clock = clock
        self._timings: dict[int, _Timing] = {}
        self._done: set[int] = set()
        self._setups: list[float] = []
        self._per_picture: dict[str, float] = {}  # kind of work: seconds per picture, latest measured

    def start(self, index: int) -> None:
        self._timings[index] = _Timing(started=self.clock())

    def finish(self, index: int) -> None:
        """The scenario ended (completed, failed or cancelled): none of its batches are left."""
        self._done.add(index)

    def batch(self, index: int, progress: BatchProgress) -> None:
        now = self.clock()
        timing = self._timings.get(index) or _Timing(started=now)
        self._timings[index] = timing
        if timing.last is None:
            self._setups.append(now - timing.started)  # the first batch waits for the model and the pictures
        else:
            self._time(self.plans[index], timing, progress, now - timing.last)
        timing.last, timing.where = now, progress

    def _time(self, plan: ScenarioPlan, timing: _Timing, progress: BatchProgress, seconds: float) -> None:
        phase, timed = progress.phase, _timed_as(plan, progress.phase, progress.epoch)
        seen = timing.seen[timed] = timing.seen.get(timed, 0) + 1
        if seen <= WARM_UP and plan.batches[phase] > 2 * WARM_UP:
            return
        window = max(plan.batches[phase], 1) if phase != "features" else None
        times = timing.seconds.setdefault(timed, deque(maxlen=window))
        times.append(seconds)
        pictures = plan.pictures[phase] / max(plan.batches[phase], 1)
        self._per_picture[timed if timed in HEAD_KINDS else plan.kinds[phase]] = _mean(times) / max(pictures, 1e-9)

    @property
    def measured(self) -> bool:
        return any(kind in self._per_picture for kind in FORWARD_PASSES)

    def remaining(self) -> float | None:
        """Seconds the job has left, or None before there is anything to go by."""
        left = self.remaining_by_scenario()
        return None if left is None else sum(left)

    def remaining_by_scenario(self) -> list[float] | None:
        """Seconds each scenario has left (0 once it ended), or None before there is anything to go by."""
        if not self.measured:
            return None
        left, now = [], self.clock()
        for index, plan in enumerate(self.plans):
            timing = self._timings.get(index)
            if index in self._done:
                left.append(0.0)
            elif timing is None or timing.where is None:  # not started, or still setting up
                setup = sum(self._setups) / len(self._setups) if self._setups else 0.0
                elapsed = now - timing.started if timing else 0.0
                left.append(max(setup - elapsed, 0.0) + self._scenario_left(plan, None, {}))
            else:  # counting down between batches
                left.append(max(self._scenario_left(plan, timing.where, timing.seconds) - (now - timing.last), 0.0))
        return left

    def _scenario_left(self, plan: ScenarioPlan, where: BatchProgress | None, seconds: dict[str, deque]) -> float:
        timed = [*PHASES, *HEAD_KINDS]
        rate = {key: _mean(seconds[key]) if seconds.get(key) else self._rate(plan, key) for key in timed}

        def epochs(first: int, last: int) -> float:
            """Epochs `first` to `last`, each at the rates of its kind (a head epoch, or one of the backbone)."""
            total = 0.0
            for epoch in range(first, last + 1):
                train, val = (_timed_as(plan, phase, epoch) for phase in ("train", "val"))
                total += plan.batches["train"] * rate[train] + plan.batches["val"] * rate[val]
            return total

        if where is None:
            return plan.batches["features"] * rate["features"] + epochs(1, plan.epochs)
        if where.phase == "features":
            return (where.batches - where.batch) * rate["features"] + epochs(1, where.epochs)
        now = rate[_timed_as(plan, where.phase, where.epoch)] * (where.batches - where.batch)
        if where.phase == "train":
            now += plan.batches["val"] * rate[_timed_as(plan, "val", where.epoch)]
        return now + epochs(where.epoch + 1, where.epochs)

    def _rate(self, plan: ScenarioPlan, timed: str) -> float:
        """Seconds per batch of a phase this scenario has not timed: from the same kind of work, or the backbone's
        forward pass measured in another kind, per picture."""
        phase = timed.removeprefix("head-")
        if not plan.batches[phase]:
            return 0.0
        kind = timed if timed in HEAD_KINDS else plan.kinds[phase]
        per_picture = self._per_picture.get(kind)
        if per_picture is None and kind in FORWARD_PASSES:
            forwards = [self._per_picture[k] / FORWARD_PASSES[k] for k in FORWARD_PASSES if k in self._per_picture]
            per_picture = FORWARD_PASSES[kind] * sum(forwards) / len(forwards) if forwards else 0.0
        return (per_picture or 0.0) * plan.pictures[phase] / plan.batches[phase]


def _timed_as(plan: ScenarioPlan, phase: str, epoch: int) -> str:
    """What a batch is timed as: its phase, or in a head epoch the head's own kind of work."""
    return f"head-{phase}" if phase in ("train", "val") and epoch <= plan.head_epochs else phase


def duration_text(seconds: float) -> str:
    """A duration as the pages and the command line write it: seconds up to 90, then minutes."""
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _mean(values) -> float:
    return sum(values) / len(values)
