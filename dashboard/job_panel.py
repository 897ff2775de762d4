"""The background job's panel, on the Train and Experiments pages: progress, time left, Cancel, each run's state,
and live charts (for an experiment, its cells' table; its results are drawn by the page)."""
from __future__ import annotations

import streamlit as st

from core.errors import JobRefused
from core.eta import duration_text
from core.jobs import JobSnapshot, TrainingJobs
from dashboard import charts, state
from dashboard.widgets import error_message, show_error


def _where(job: JobSnapshot) -> str:
    progress = job.progress
    if progress is None:
        return "preparing"
    if progress.phase == "features":
        return f"computing the frozen backbone's features, batch {progress.batch}/{progress.batches}"
    return f"epoch {progress.epoch}/{progress.epochs}, {progress.phase} batch {progress.batch}/{progress.batches}"


def _outcome(job: JobSnapshot, failed: str) -> None:
    names = f"experiment {job.experiment}" if job.experiment else ", ".join(s.scenario for s in job.scenarios)
    unit = "cell" if job.experiment else "scenario"
    where = "below" if job.experiment else "on the Compare page"
    took = duration_text(job.elapsed)
    if job.state == "completed" and failed:
        st.warning(f"Job {job.job_id} ({names}, {job.backbones}) finished in {took}, but not every {unit} trained; see "
                   f"the others {where}.")
    elif job.state == "completed":
        st.success(f"Job {job.job_id} ({names}, {job.backbones}) finished in {took}. See it {where}.")
        if not job.experiment:
            st.page_link("pages/2_Compare.py", label="Compare the runs", icon="📊")
    elif job.state == "cancelled":
        limit = duration_text(job.minutes_allowed * 60) if job.time_limited else ""
        why = f"reached its time limit ({limit})" if job.time_limited else "was cancelled"
        again = " Start the same experiment again to train the cells left." if job.experiment else ""
        st.warning(f"Job {job.job_id} {why}; what it had trained was saved, marked cancelled.{again}")
    elif len(job.failures) > 1:
        st.error(f"Job {job.job_id} failed: every {unit} did.\n\n{failed}")
    else:
        st.error(f"Job {job.job_id} failed: {error_message(job.message, job.setting)}")


@st.fragment(run_every=1.0)
def job_panel(jobs: TrainingJobs, idle: str = "No training yet. Choose the scenarios above and press Start.") -> None:
    job = jobs.snapshot()
    if job is None:
        st.info(idle)
        return
    failed = "\n\n".join(f"{s.label} failed: {error_message(s.message, s.setting)}" for s in job.failures)
    if job.running:
        eta = (f" · about {duration_text(job.eta_seconds)} left" if job.eta_seconds is not None
               else " · estimating time left…")
        current = job.scenarios[job.current].label
        st.progress(job.fraction, text=f"Training {current} ({job.current + 1} of {len(job.scenarios)}): "
                                       f"{_where(job)} · {duration_text(job.elapsed)} so far{eta}")
        if job.cancel_requested:
            st.warning("Stopping: the time limit is reached..." if job.time_limited
                       else "Cancelling after the current batch...")
        elif job.owner not in (None, state.owner()):
            st.caption("Started by another visitor; only they can cancel it.")
        elif st.button("Cancel", key="cancel"):
            try:
                jobs.cancel(owner=state.owner())
            except JobRefused as exc:
                show_error(exc)
    else:
        _outcome(job, failed)
        if job.experiment and st.session_state.get("job_seen_running") == job.job_id:
            st.session_state["job_seen_running"] = None
            st.rerun()  # the experiment's results below include its last cells now
    if job.running:
        st.session_state["job_seen_running"] = job.job_id
    if failed and job.state != "failed":  # each failed run's reason, while the others train or after them
        st.error(failed)

    rows = {"cell" if job.experiment else "scenario": [], "status": [], "epochs": [], "best val acc": [], "run": []}
    for scenario in job.scenarios:
        rows["cell" if job.experiment else "scenario"].append(scenario.label)
        rows["status"].append(scenario.status)
        rows["epochs"].append(len(scenario.history))
        best = max((e.val_acc for e in scenario.history), default=None)
        rows["best val acc"].append(f"{best:.3f}" if best is not None else "-")
        rows["run"].append(scenario.run_id or "-")
    st.dataframe(rows, hide_index=True, height=min(35 * (len(job.scenarios) + 1) + 3, 320))
    if job.experiment:
        running = job.scenarios[job.current]
        if job.running and running.history:
            st.plotly_chart(charts.live_history({running.label: running.history}))
        return
    series = {s.scenario: s.history for s in job.scenarios if s.history}
    if series:
        st.plotly_chart(charts.live_history(series))
