"""Train: choose data, backbone, scenarios and recipe; training runs in the background with live charts."""
from pathlib import Path

import streamlit as st

from core.errors import JobRefused, StudioError
from core.jobs import JobRequest
from core.models import BACKBONES, SCENARIOS, TUTORIAL_SCENARIOS
from core.runs import default_runs_dir
from core.train import TrainConfig
from dashboard import charts, state
from dashboard.widgets import error_message, limits_text, show_error

st.set_page_config(page_title="Train · Transfer Learning Studio", page_icon="🏋️", layout="wide")
st.title("Train")

settings = state.settings()  # in shared mode: no server paths typed in, and limits on each job
jobs = state.training_jobs()
defaults = TrainConfig()
most_epochs = settings.limits.max_epochs or 500

with st.form("train"):
    datasets = state.datasets()
    dataset_label = st.selectbox("Data set", [*datasets] if settings.shared else [*datasets, "Another folder..."],
                                 key="dataset")
    other_folder = "" if settings.shared else st.text_input("Folder with train/ and val/ (for 'Another folder...')",
                                                            "", key="folder")
    left, right = st.columns(2)
    backbone = left.selectbox("Backbone", list(BACKBONES), format_func=lambda name: BACKBONES[name].title,
                              key="backbone")
    scenarios = right.multiselect("Scenarios", list(SCENARIOS), default=list(TUTORIAL_SCENARIOS),
                                  format_func=lambda name: SCENARIOS[name].title, key="scenarios")
    with st.expander("Recipe (the tutorial's values)"):
        a, b, c, d = st.columns(4)
        epochs = a.number_input("Epochs", 1, most_epochs, min(defaults.epochs, most_epochs), key="epochs")
        batch_size = b.number_input("Batch size", 1, 512, defaults.batch_size, key="batch_size")
        lr = c.number_input("Learning rate", 1e-6, 1.0, defaults.lr, format="%.4f", key="lr")
        momentum = d.number_input("Momentum", 0.0, 0.99, defaults.momentum, key="momentum")
        step_size = a.number_input("LR step (epochs)", 1, 500, defaults.step_size, key="step_size")
        gamma = b.number_input("LR factor", 0.01, 1.0, defaults.gamma, key="gamma")
        seed = c.number_input("Seed", 0, 2**31 - 1, defaults.seed, key="seed")
    start = st.form_submit_button("Start training", type="primary", key="start")
if limits := limits_text(settings.limits):
    st.caption(limits)

if start:
    folder = Path(other_folder).expanduser() if dataset_label == "Another folder..." else datasets[dataset_label]
    try:
        configs = [TrainConfig(backbone=backbone, scenario=s, epochs=int(epochs), batch_size=int(batch_size), lr=lr,
                               momentum=momentum, step_size=int(step_size), gamma=gamma, seed=int(seed))
                   for s in scenarios]
        state.scan(folder).raise_if_invalid()
        jobs.start(JobRequest(data_dir=folder, configs=configs, runs_dir=default_runs_dir()), owner=state.owner())
    except (StudioError, ValueError) as exc:
        show_error(exc)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


@st.fragment(run_every=1.0)
def job_panel() -> None:
    job = jobs.snapshot()
    if job is None:
        st.info("No training yet. Choose the scenarios above and press Start.")
        return
    names = ", ".join(s.scenario for s in job.scenarios)
    if job.running:
        progress = job.progress
        current = job.scenarios[job.current].scenario
        if progress is None:
            where = "preparing"
        elif progress.phase == "features":
            where = f"computing the frozen backbone's features, batch {progress.batch}/{progress.batches}"
        else:
            where = (f"epoch {progress.epoch}/{progress.epochs}, "
                     f"{progress.phase} batch {progress.batch}/{progress.batches}")
        eta = f" · about {_minutes(job.eta_seconds)} left" if job.eta_seconds else ""
        st.progress(job.fraction, text=f"Training {current} ({job.current + 1} of {len(job.scenarios)}): "
                                       f"{where} · {_minutes(job.elapsed)} so far{eta}")
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
    elif job.state == "completed":
        st.success(f"Job {job.job_id} ({names}, {job.backbone}) finished in {_minutes(job.elapsed)}. "
                   "See it on the Compare page.")
    elif job.state == "cancelled":
        why = f"reached its time limit ({_minutes(job.minutes_allowed * 60)})" if job.time_limited else "was cancelled"
        st.warning(f"Job {job.job_id} {why}; what it had trained was saved, marked cancelled.")
    else:
        st.error(f"Job {job.job_id} failed: {error_message(job.message, job.setting)}")

    rows = {"scenario": [], "status": [], "epochs": [], "best val acc": [], "run": []}
    for scenario in job.scenarios:
        rows["scenario"].append(scenario.scenario)
        rows["status"].append(scenario.status)
        rows["epochs"].append(len(scenario.history))
        rows["best val acc"].append(max((e.val_acc for e in scenario.history), default=None))
        rows["run"].append(scenario.run_id or "")
    st.dataframe(rows, hide_index=True)
    series = {s.scenario: s.history for s in job.scenarios if s.history}
    if series:
        st.plotly_chart(charts.live_history(series))


st.subheader("Progress")
job_panel()
