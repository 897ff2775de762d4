"""The background job manager on its own, without Streamlit: start, refusal, cancel, failure, snapshots."""
import dataclasses
import time

import pytest

import core.jobs
from core.errors import JobRefused, StudioError
from core.jobs import JobLimits, JobRequest, TrainingJobs, count_pictures
from core.runs import list_runs
from core.train import TrainConfig


@pytest.fixture
def jobs():
    manager = TrainingJobs()
    yield manager
    job = manager.snapshot()
    manager.cancel(owner=job.owner if job else None)
    manager.wait(60)


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


def test_an_unexpected_error_fails_the_running_scenario_and_skips_the_rest(jobs, tiny_dataset, tmp_path,
                                                                             monkeypatch):
    def broken_train(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(core.jobs, "train", broken_train)
    jobs.start(request(tiny_dataset, tmp_path / "runs", None, ("finetune", "frozen")))
    job = jobs.wait(60)
    assert job.state == "failed" and job.message == "RuntimeError: out of memory" and job.setting is None
    assert [s.status for s in job.scenarios] == ["failed", "skipped"]


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
