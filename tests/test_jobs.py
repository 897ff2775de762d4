"""The background job manager on its own, without Streamlit: start, refusal, cancel, failure, snapshots."""
import copy
import dataclasses
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import core.jobs
from core.data import load_dataset
from core.errors import JobRefused, StudioError
from core.eta import WARM_UP, Estimator
from core.jobs import JobLimits, JobRequest, JobSnapshot, ScenarioState, TrainingJobs, count_pictures
from core.models import SCENARIOS
from core.results import ScenarioPlan
from core.runs import list_runs
from core.train import BatchProgress, Callbacks, TrainConfig, Trainer


def request(data_dir, runs_dir, weights, scenarios=("frozen",), epochs=2) -> JobRequest:
    configs = [TrainConfig(backbone="mobilenet_v2", scenario=scenario, epochs=epochs, device="cpu", workers=0)
               for scenario in scenarios]
    return JobRequest(data_dir=data_dir, configs=configs, runs_dir=runs_dir, weights=weights)


def wait_for(condition, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail("timed out waiting for the job")


def test_a_job_trains_each_scenario_in_turn_and_saves_each_run(jobs, tiny_dataset, random_weights_dir, tmp_path):
    job_id = jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("frozen", "finetune")))
    job = jobs.wait(120)
    assert job.job_id == job_id and job.state == "completed" and job.fraction == 1.0 and job.finished
    assert [s.status for s in job.scenarios] == ["completed", "completed"]
    assert [len(s.history) for s in job.scenarios] == [2, 2] and job.eta_seconds is None
    saved = {run.id: run for run in list_runs(tmp_path / "runs").runs}
    assert {s.run_id for s in job.scenarios} == set(saved)
    assert [saved[s.run_id].scenario for s in job.scenarios] == ["frozen", "finetune"]


def test_a_second_start_is_refused_while_a_job_runs(jobs, tiny_dataset, random_weights_dir, tmp_path):
    jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("finetune",), epochs=500))
    with pytest.raises(JobRefused, match=r"is still training \(finetune, mobilenet_v2\)"):
        jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir))
    assert jobs.snapshot().job_id == 1 and jobs.snapshot().running


def test_cancel_stops_after_the_current_batch_and_keeps_the_work(jobs, tiny_dataset, random_weights_dir, tmp_path):
    jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("finetune", "frozen"), epochs=500))
    wait_for(lambda: jobs.snapshot().scenarios[0].history)
    jobs.cancel()
    assert jobs.snapshot().cancel_requested
    job = jobs.wait(60)
    assert job.state == "cancelled" and [s.status for s in job.scenarios] == ["cancelled", "skipped"]
    runs = list_runs(tmp_path / "runs").runs
    assert [(run.scenario, run.status) for run in runs] == [("finetune", "cancelled")]
    assert len(runs[0].history) >= 1 and runs[0].id == job.scenarios[0].run_id
    jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir))  # the next job may start
    assert jobs.wait(60).state == "completed"


def test_a_snapshot_is_a_copy_that_shows_progress(jobs, tiny_dataset, random_weights_dir, tmp_path):
    jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("finetune",), epochs=500))
    snapshot = wait_for(lambda: (job := jobs.snapshot()).scenarios[0].history and job)
    assert snapshot.running and snapshot.scenarios[0].status == "running" and snapshot.progress.epochs == 500
    assert 0 < snapshot.fraction < 1 and snapshot.elapsed > 0
    snapshot.scenarios[0].history.clear()
    snapshot.state = "completed"
    assert jobs.snapshot().scenarios[0].history and jobs.snapshot().running


def test_a_library_error_ends_the_job_with_its_message_and_setting(jobs, tmp_path):
    jobs.start(request(tmp_path / "no-such-folder", tmp_path / "runs", None, ("finetune", "frozen")))
    job = jobs.wait(60)
    assert job.state == "failed" and "no-such-folder does not exist" in job.message and job.setting == "data"
    assert [s.status for s in job.scenarios] == ["skipped", "skipped"] and job.finished


def test_a_job_fails_only_when_every_scenario_fails_each_with_its_reason(jobs, tiny_dataset, tmp_path, monkeypatch):
    def broken_train(trainer, *args, **kwargs):
        raise RuntimeError(f"out of memory in {trainer.config.scenario}")

    monkeypatch.setattr(core.jobs.Trainer, "train", broken_train)
    jobs.start(request(tiny_dataset, tmp_path / "runs", None, ("finetune", "frozen")))
    job = jobs.wait(60)
    assert [s.status for s in job.scenarios] == ["failed", "failed"] and job.failures == job.scenarios
    assert [s.message for s in job.scenarios] == ["RuntimeError: out of memory in finetune",
                                                  "RuntimeError: out of memory in frozen"]
    assert job.state == "failed" and job.message == "RuntimeError: out of memory in finetune" and job.setting is None
    assert job.progress is None and job.eta_seconds is None


def test_a_failing_scenario_does_not_keep_the_next_from_training(jobs, tiny_dataset, tmp_path, network_attempts):
    """The review's case: finetune needs ImageNet weights, which are nowhere offline; scratch needs none."""
    jobs.start(request(tiny_dataset, tmp_path / "runs", None, ("finetune", "scratch"), epochs=1))
    job = jobs.wait(120)
    finetune, scratch = job.scenarios
    assert finetune.status == "failed" and finetune.setting == "weights" and "Could not download" in finetune.message
    assert finetune.run_id is None and not finetune.history
    assert scratch.status == "completed" and scratch.message == "" and len(scratch.history) == 1
    assert job.state == "completed" and job.failures == [finetune] and job.message == "" and job.setting is None
    assert [(run.scenario, run.id) for run in list_runs(tmp_path / "runs").runs] == [("scratch", scratch.run_id)]


def test_a_job_needs_a_scenario(jobs, tiny_dataset, tmp_path):
    with pytest.raises(StudioError, match="at least one scenario"):
        jobs.start(JobRequest(data_dir=tiny_dataset, configs=[], runs_dir=tmp_path))
    assert jobs.snapshot() is None


# ---------------------------------------------------------------- limits and owners (a shared dashboard)

def test_limits_refuse_too_many_epochs_or_pictures_before_anything_starts(tiny_dataset, random_weights_dir,
                                                                          tmp_path):
    jobs = TrainingJobs(JobLimits(max_epochs=3, max_pictures=23))  # the tiny set has 16 + 8 pictures
    with pytest.raises(JobRefused, match="4 epochs is more than this studio allows: at most 3 epochs"):
        jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("frozen", "finetune"), epochs=4))
    with pytest.raises(JobRefused, match="more than 23 pictures.*at most 23. Choose a smaller data set"):
        jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, epochs=3))
    assert jobs.snapshot() is None and not (tmp_path / "runs").exists()
    assert count_pictures(tiny_dataset) == 24


def test_test_pictures_count_towards_the_pictures_limit(tiny_dataset, tmp_path):
    from tests.test_data import add_test_split

    data = add_test_split(Path(shutil.copytree(tiny_dataset, tmp_path / "with-test")), per_class=2)
    assert count_pictures(data) == 28  # 16 + 8 + 4
    with pytest.raises(JobRefused, match="more than 25 pictures in train/, val/ and test/"):
        JobLimits(max_pictures=25).check(request(data, tmp_path / "runs", None))


def test_the_time_limit_cancels_the_job_and_keeps_its_work(tiny_dataset, random_weights_dir, tmp_path):
    jobs = TrainingJobs(JobLimits(max_minutes=4 / 60))
    jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("finetune", "frozen"), epochs=500))
    job = jobs.wait(60)
    assert job.state == "cancelled" and job.time_limited and job.cancel_requested
    assert [s.status for s in job.scenarios] == ["cancelled", "skipped"]
    assert 4 <= job.elapsed < 30 and job.minutes_allowed == pytest.approx(4 / 60)
    runs = list_runs(tmp_path / "runs").runs
    assert [(run.scenario, run.status) for run in runs] == [("finetune", "cancelled")]


def test_a_request_deadline_is_kept_when_it_comes_before_the_limit(jobs, tiny_dataset, random_weights_dir, tmp_path):
    deadline = time.time() + 3
    slow = request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("finetune",), epochs=500)
    jobs.start(dataclasses.replace(slow, deadline=deadline))
    assert jobs.snapshot().deadline == deadline
    job = jobs.wait(60)
    assert job.state == "cancelled" and job.time_limited and job.finished < deadline + 20


def test_only_the_owner_cancels_a_job_that_has_one(jobs, tiny_dataset, random_weights_dir, tmp_path):
    jobs.start(request(tiny_dataset, tmp_path / "runs", random_weights_dir, ("finetune",), epochs=500), owner="alice")
    assert jobs.snapshot().owner == "alice"
    for someone_else in (None, "bob"):
        with pytest.raises(JobRefused, match="started by someone else; only they can cancel it"):
            jobs.cancel(owner=someone_else)
    assert jobs.snapshot().running and not jobs.snapshot().cancel_requested
    jobs.cancel(owner="alice")
    job = jobs.wait(60)
    assert job.state == "cancelled" and not job.time_limited


# ---------------------------------------------------------------- the time left, on a fake clock

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batches_of(plan: ScenarioPlan, rates: dict[str, float]):
    """(seconds the batch takes, BatchProgress) for each batch of a scenario, in the order train() reports them."""
    for batch in range(1, plan.batches["features"] + 1):
        yield rates["features"], BatchProgress(0, plan.epochs, "features", batch, plan.batches["features"])
    for epoch in range(1, plan.epochs + 1):
        for phase in ("train", "val"):
            for batch in range(1, plan.batches[phase] + 1):
                yield rates[phase], BatchProgress(epoch, plan.epochs, phase, batch, plan.batches[phase])


def within(estimate: float | None, truth: float, tolerance: float = 0.25) -> bool:
    return estimate is not None and abs(estimate - truth) <= tolerance * truth


def test_the_time_left_comes_from_each_phases_own_rate():
    """The review's numbers: frozen caches features in 100 batches of 0.5 s, then trains 25 epochs of 10 train
    batches of 0.01 s and 5 val batches of 0.005 s; finetune's batches are far slower."""
    pictures = {"features": 400, "train": 40, "val": 20}
    frozen = ScenarioPlan("frozen", 25, {"features": 100, "train": 10, "val": 5}, pictures,
                          {"features": "forward", "train": "head-train", "val": "head-val"})
    finetune = ScenarioPlan("finetune", 25, {"features": 0, "train": 10, "val": 5}, {**pictures, "features": 0},
                            {"features": "forward", "train": "train-backbone", "val": "forward"})
    rates = [{"features": 0.5, "train": 0.01, "val": 0.005}, {"train": 0.3, "val": 0.1}]
    setup = 3.0
    clock = FakeClock()
    estimator = Estimator([frozen, finetune], clock)
    started = clock.now
    seen, ends = [], []  # (scenario, clock, batch, time left per scenario); when each scenario ended
    for index, plan in enumerate((frozen, finetune)):
        estimator.start(index)
        clock.now += setup
        for seconds, progress in batches_of(plan, rates[index]):
            clock.now += seconds
            estimator.batch(index, progress)
            seen.append((index, clock.now, progress, estimator.remaining_by_scenario()))
        ends.append(clock.now)
        estimator.finish(index)
    assert estimator.remaining() == 0
    assert seen[0][3] is None  # one batch is no rate: "estimating time left…"
    job_ends = clock.now
    for index, now, progress, left in seen:
        scenario_ends = ends[index]
        after_first_epoch = progress.epoch > 1 or (progress.phase, progress.batch) == ("val", progress.batches)
        if progress.phase == "features" and progress.batch >= 5:  # the backbone's rate, not the time so far
            assert left is not None and sum(left) != pytest.approx(now - started)
            assert left[0] >= (100 - progress.batch) * 0.5  # the features left, and the head's epochs once timed
            if progress.batch <= 50:  # the head, not timed yet, counts as nothing: a small part of frozen's time
                assert within(left[0], scenario_ends - now), (progress, left)
            assert left[1] > 0  # finetune, not started: from the backbone's forward rate measured by frozen
        if after_first_epoch:
            assert within(left[index], scenario_ends - now), (index, progress, left, scenario_ends - now)
        if index == 1 and after_first_epoch:
            assert within(sum(left), job_ends - now), (progress, left, job_ends - now)


def test_a_recipes_head_epochs_are_timed_apart_from_the_epochs_that_train_the_backbone():
    """fine-tune: features once, 1 epoch of the head on them (fast), then 4 epochs of the whole network (slow). Timed
    as one kind of "train", the head's epoch said the 4 slow epochs would take as little as it did."""
    plan = ScenarioPlan("finetune", 5, {"features": 20, "train": 10, "val": 5},
                        {"features": 80, "train": 40, "val": 20},
                        {"features": "forward", "train": "train-backbone", "val": "forward"}, head_epochs=1)
    head, backbone = {"features": 0.1, "train": 0.002, "val": 0.001}, {"features": 0.1, "train": 0.3, "val": 0.1}
    clock = FakeClock()
    estimator = Estimator([plan], clock)
    estimator.start(0)
    seen = []
    for seconds, progress in batches_of(plan, head):
        rates = head if progress.epoch <= 1 else backbone
        clock.now += rates[progress.phase] if progress.phase != "features" else seconds
        estimator.batch(0, progress)
        seen.append((clock.now, progress, estimator.remaining()))
    ends = clock.now
    for now, progress, left in seen:
        if progress.epoch == 1 and (progress.phase, progress.batch) == ("val", progress.batches):  # the head's end
            assert within(left, ends - now), (left, ends - now)
        if progress.epoch >= 3:
            assert within(left, ends - now), (progress, left, ends - now)


def test_the_first_time_left_shown_leaves_out_the_slower_first_batches():
    """Measured at 2,000 pictures: the first batches through a network are slower (0.09 s against 0.04 s), and a
    first time left taken from them doubled a frozen run's."""
    frozen = ScenarioPlan("frozen", 3, {"features": 200, "train": 50, "val": 13}, {"features": 800, "train": 200,
                          "val": 50}, {"features": "forward", "train": "head-train", "val": "head-val"})
    clock = FakeClock()
    estimator = Estimator([frozen], clock)
    estimator.start(0)
    shown, started = None, clock.now
    for seen, (seconds, progress) in enumerate(batches_of(frozen, {"features": 0.04, "train": 0.002, "val": 0.001})):
        clock.now += 0.5 if seen == 0 else 0.09 if seen < 3 else seconds
        estimator.batch(0, progress)
        if shown is None and estimator.remaining() is not None:
            shown = (estimator.remaining(), clock.now)
    left, at = shown
    assert within(left, clock.now - at, 0.1), (left, clock.now - at)
    assert at - started < 1  # shown within the first few batches


def test_a_scenarios_plan_counts_what_train_reports(tiny_dataset, random_weights_dir):
    scan = load_dataset(tiny_dataset)
    for scenario in SCENARIOS:
        for fast in (True, False):
            config = TrainConfig(backbone="mobilenet_v2", scenario=scenario, epochs=2, device="cpu", fast=fast,
                                 workers=0)
            calls = []
            Trainer(config, random_weights_dir, Callbacks(calls.append)).train(scan)
            plan = Trainer(config).plan(scan)
            assert len(calls) == plan.total_batches == Trainer(config).planned_batches(scan)
            assert [sum(c.phase == phase for c in calls) for phase in ("features", "train", "val")] == [
                plan.batches["features"], 2 * plan.batches["train"], 2 * plan.batches["val"]]


def test_a_jobs_time_left_and_progress_follow_the_scenario_that_trains(tiny_dataset, tmp_path, monkeypatch):
    """Finetune then frozen, as in the review, where the old estimate copied the time so far while frozen cached
    its features, and the page showed finetune's last batch once it was done."""
    clock = FakeClock()
    jobs = TrainingJobs(clock=clock)
    rates = {"finetune": {"train": 0.4, "val": 0.1}, "frozen": {"features": 0.5, "train": 0.01, "val": 0.005}}
    seen = []  # (scenario, clock, batch, snapshot)

    def fake_train(config, scan, weights=None, on_batch=None, on_epoch=None):
        seen.append((config.scenario, clock.now, None, jobs.snapshot()))
        clock.now += 2.0  # the model built and the pictures decoded
        for seconds, progress in batches_of(Trainer(config).plan(scan), rates[config.scenario]):
            clock.now += seconds
            on_batch(progress)
            seen.append((config.scenario, clock.now, progress, jobs.snapshot()))
        return SimpleNamespace(status="completed")

    monkeypatch.setattr(core.jobs.Trainer, "train", lambda trainer, scan: fake_train(
        trainer.config, scan, trainer.weights, trainer.callbacks.on_batch, trainer.callbacks.on_epoch))
    monkeypatch.setattr(core.jobs, "save_run", lambda result, scan, runs_dir: SimpleNamespace(id="run"))
    configs = [TrainConfig(backbone="mobilenet_v2", scenario=scenario, epochs=epochs, device="cpu", workers=0)
               for scenario, epochs in (("finetune", 5), ("frozen", 25))]
    started = clock.now
    jobs.start(JobRequest(data_dir=tiny_dataset, configs=configs, runs_dir=tmp_path / "runs"))
    job = jobs.wait(60)
    assert job.state == "completed" and job.eta_seconds is None and job.progress is None
    ends = clock.now
    for scenario, now, progress, snapshot in seen:
        assert snapshot.running and snapshot.scenarios[snapshot.current].scenario == scenario
        if progress is None:  # a scenario starts: nothing of the one before it is shown
            assert snapshot.progress is None
            continue
        assert snapshot.progress == progress
        if (scenario, progress.epoch, progress.phase, progress.batch) == ("finetune", 1, "train", 1):
            assert snapshot.eta_seconds is None  # "estimating time left…"
        if progress.phase == "features" and progress.batch > 1 + WARM_UP:  # its first batches are not timed
            assert snapshot.eta_seconds != pytest.approx(now - started)
            assert snapshot.eta_seconds == pytest.approx((progress.batches - progress.batch) * 0.5)  # head: untimed
        after_first_epoch = progress.epoch > 1 or (progress.phase, progress.batch) == ("val", progress.batches)
        if scenario == "frozen" and after_first_epoch:
            assert within(snapshot.eta_seconds, ends - now), (progress, snapshot.eta_seconds, ends - now)
        assert 0 <= snapshot.fraction <= 1


# ---------------------------------------------------------------- what the Train page shows of a job

def train_page(job: JobSnapshot, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from dashboard import state

    monkeypatch.setenv("STUDIO_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(state, "training_jobs", lambda: SimpleNamespace(snapshot=lambda: copy.deepcopy(job)))
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages/1_Train.py"), default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def a_job(**changes) -> JobSnapshot:
    started = time.time() - 30
    fields = dict(job_id=3, state="running", started=started, finished=started + 30 if changes.get("state") else None,
                  data_dir="data",
                  scenarios=[ScenarioState("finetune", "completed"), ScenarioState("frozen", "running")], current=1,
                  configs=[TrainConfig(backbone="mobilenet_v2", scenario=s) for s in ("finetune", "frozen")])
    return JobSnapshot(**{**fields, **changes})


def test_the_page_says_estimating_until_the_time_left_is_measured(tmp_path, monkeypatch):
    features = BatchProgress(0, 25, "features", 1, 56)
    app = train_page(a_job(progress=features, fraction=0.5), tmp_path, monkeypatch)
    text = app.get("progress")[0].proto.text
    assert "Training frozen (2 of 2): computing the frozen backbone's features, batch 1/56" in text
    assert text.endswith(" so far · estimating time left…")
    app = train_page(a_job(progress=features, eta_seconds=125.0), tmp_path, monkeypatch)
    assert app.get("progress")[0].proto.text.endswith(" so far · about 2.1 min left")
    app = train_page(a_job(), tmp_path, monkeypatch)  # between scenarios: not the last one's final batch
    assert "Training frozen (2 of 2): preparing" in app.get("progress")[0].proto.text


def test_a_finished_experiment_names_every_backbone_it_trained(tmp_path, monkeypatch):
    configs = [TrainConfig(backbone=name, scenario="frozen") for name in ("mobilenet_v2", "efficientnet_b0")]
    app = train_page(a_job(state="completed", experiment="bees", configs=configs,
                           scenarios=[ScenarioState("frozen", "completed")] * 2), tmp_path, monkeypatch)
    assert "Job 3 (experiment bees, mobilenet_v2, efficientnet_b0) finished in 30 s" in app.success[0].value


def test_the_page_shows_each_failed_scenarios_reason(tmp_path, monkeypatch):
    scenarios = [ScenarioState("finetune", "failed", message="Could not download the weights.", setting="weights"),
                 ScenarioState("scratch", "completed", run_id="run-1")]
    app = train_page(a_job(state="completed", scenarios=scenarios), tmp_path, monkeypatch)
    assert "finished in 30 s, but not every scenario trained" in app.warning[0].value
    hint = "finetune failed: Could not download the weights. The app reads STUDIO_WEIGHTS"
    assert app.error[0].value.startswith(hint)
    scenarios[1] = ScenarioState("scratch", "failed", message="RuntimeError: out of memory")
    app = train_page(a_job(state="failed", scenarios=scenarios, message=scenarios[0].message,
                           setting="weights"), tmp_path, monkeypatch)
    error = app.error[0].value
    assert error.startswith("Job 3 failed: every scenario did.") and hint in error
    assert "scratch failed: RuntimeError: out of memory" in error


def test_a_cancelled_experiment_job_keeps_its_cells_and_a_new_start_trains_only_the_rest(
        jobs, tiny_dataset, random_weights_dir, tmp_path):
    from core.experiment import ExperimentPlan

    recipe = TrainConfig(backbone="mobilenet_v2", scenario="finetune", epochs=300, device="cpu", workers=0)
    plan = ExperimentPlan("cancel-me", str(tiny_dataset), recipe, ["frozen", "finetune"], [0, 1], [2])
    experiment = dataclasses.replace(request(tiny_dataset, tmp_path / "runs", random_weights_dir), experiment=plan)
    jobs.start(experiment)
    assert [s.label for s in jobs.snapshot().scenarios] == [
        "frozen · seed 0 · 2 per class", "frozen · seed 1 · 2 per class",
        "finetune · seed 0 · 2 per class", "finetune · seed 1 · 2 per class"]
    wait_for(lambda: (job := jobs.snapshot()).current == 2 and job.progress and job.progress.epoch >= 2, 240)
    jobs.cancel()
    job = jobs.wait(60)
    assert job.state == "cancelled" and job.experiment == "cancel-me"
    assert [s.status for s in job.scenarios] == ["completed", "completed", "cancelled", "skipped"]
    first = {run.id for run in list_runs(tmp_path / "runs").runs}
    assert len(first) == 3  # the cancelled cell is saved too, marked cancelled, and trained again next time

    quick = dataclasses.replace(plan, recipe=dataclasses.replace(recipe, epochs=1))
    with pytest.raises(StudioError, match="made with another epochs"):  # its runs could not be compared
        jobs.start(dataclasses.replace(experiment, experiment=quick))
    jobs.start(dataclasses.replace(experiment, experiment=dataclasses.replace(plan, seeds=[0])))
    assert [s.label for s in jobs.snapshot().scenarios] == ["finetune · seed 0 · 2 per class"]  # only what is missing
    jobs.cancel()
    assert jobs.wait(60).state == "cancelled"
