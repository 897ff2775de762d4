"""Train: choose data, backbone, scenarios and recipe (and find a learning rate); training runs in the background
with live charts."""
from pathlib import Path

import streamlit as st

from core.errors import StudioError
from core.exclusions import read_exclusions
from core.jobs import JobRequest
from core.models import SCENARIOS
from core.runs import default_runs_dir
from dashboard import state
from dashboard.backbone_picker import backbone_picker, catalogue_expander
from dashboard.job_panel import job_panel
from dashboard.recipe_form import learning_rate_finder, recipe_form
from dashboard.train_form import ANOTHER_FOLDER, TrainChoices, remember, remembered, training_estimate
from dashboard.widgets import limits_text, runnable_scenarios, show_error

st.set_page_config(page_title="Train · Transfer Learning Studio", page_icon="🏋️", layout="wide")
st.title("Train")

settings = state.settings()  # in shared mode: no server paths typed in, and limits on each job
jobs = state.training_jobs()
most_epochs = settings.limits.max_epochs or 500
datasets = state.datasets()
labels = [*datasets] if settings.shared else [*datasets, ANOTHER_FOLDER]
shown = remembered(jobs.snapshot(), datasets)  # the running job's settings, else this session's last Start

dataset = st.selectbox("Data set", labels, index=labels.index(shown.dataset) if shown.dataset in labels else 0,
                       key="dataset")
folder = st.text_input("Folder with train/ and val/", shown.folder, key="folder",
                       placeholder="/home/me/pictures/my_set") if dataset == ANOTHER_FOLDER else ""
left, right = st.columns(2)
backbone = backbone_picker(left, shown.backbone, key="backbone")
scenarios = right.multiselect("Scenarios", list(SCENARIOS), default=shown.scenarios,
                              format_func=lambda name: SCENARIOS[name].title, key="scenarios")
catalogue_expander()
recipe = recipe_form(shown, most_epochs)
leave_out = st.checkbox("Leave out the pictures on the data set's exclusion list", value=shown.leave_out,
                        key="leave_out", help="The health check on Home and Your own data flags duplicates and "
                        "label suspects; the ones you put on the list stay in their folders and each run records "
                        "what it left out.")
choices = TrainChoices(backbone, scenarios, dataset, folder.strip(), leave_out=leave_out, **recipe)
data_dir = Path(choices.folder).expanduser() if dataset == ANOTHER_FOLDER else datasets[dataset]
if scenarios and (dataset != ANOTHER_FOLDER or choices.folder):
    learning_rate_finder(choices, data_dir)
    training_estimate(choices, data_dir)
start = st.button("Start training", type="primary", key="start", disabled=not scenarios)
if limits := limits_text(settings.limits):
    st.caption(limits)

if start:
    remember(choices)
    try:
        if dataset == ANOTHER_FOLDER and not choices.folder:
            raise StudioError(f"Type the folder's path in 'Folder with train/ and val/' to use '{ANOTHER_FOLDER}'.")
        choices.configs()  # checks the recipe before anything is downloaded
        state.scan(data_dir).raise_if_invalid()
        runnable = runnable_scenarios(backbone, scenarios)
        if runnable:
            configs = [config for config in choices.configs() if config.scenario in runnable]
            excluded = read_exclusions(data_dir, default_runs_dir()) if leave_out else []
            jobs.start(JobRequest(data_dir=data_dir, configs=configs, runs_dir=default_runs_dir(), excluded=excluded),
                       owner=state.owner())
            if excluded:
                st.info(f"{len(excluded)} picture(s) on the data set's exclusion list are left out.")
    except (StudioError, ValueError) as exc:
        show_error(exc)


st.subheader("Progress")
job_panel(jobs)
