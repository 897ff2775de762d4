"""Experiments: scenarios x recipes x seeds x training pictures per class, with means, 95% intervals and plain
verdicts, so that a difference can be told from luck."""
import streamlit as st

from core.config import RECIPES
from core.errors import StudioError
from core.exclusions import read_exclusions
from core.experiment import (
    DEFAULT_SIZES,
    FEWEST_SEEDS,
    ExperimentPlan,
    default_name,
    list_plans,
    recipe_configs,
    results,
    size_order,
    size_text,
)
from core.models import SCENARIOS
from core.runs import default_runs_dir, list_runs
from dashboard import charts, state
from dashboard.backbone_picker import backbones_picker, catalogue_expander
from dashboard.experiment_panel import plan_summary, plan_text, results_table, start_experiment, trade_off_charts
from dashboard.job_panel import job_panel
from dashboard.train_form import default_backbone
from dashboard.widgets import limits_text, show_error

SIZE_CHOICES = [1, 2, 5, 10, 25, 50, 100, None]
METRICS = {"best_val": "Best epoch (chosen on validation: optimistic)", "final_val": "Final epoch",
           "test": "Test pictures (kept weights; untouched by any choice)"}

st.set_page_config(page_title="Experiments · Transfer Learning Studio", page_icon="🧪", layout="wide")
st.title("Experiments")
st.caption("One run gives one number, and luck is in it: the seed, which pictures were trained on, which were "
           "validated on. An experiment repeats the recipe over seeds and over the number of training pictures, "
           "on one backbone or several, then shows each mean with its 95% interval and says which differences are "
           "real.")

settings, jobs = state.settings(), state.training_jobs()
datasets = state.datasets()
most_epochs = settings.limits.max_epochs or 500

dataset = st.selectbox("Data set", list(datasets), key="experiment_dataset")
left, right = st.columns(2)
backbones = backbones_picker(left, default_backbone(), key="experiment_backbones")
scenarios = right.multiselect("Scenarios", list(SCENARIOS), default=["frozen"],
                              format_func=lambda name: SCENARIOS[name].title, key="experiment_scenarios")
recipes = left.multiselect("Recipes", list(RECIPES), default=["tutorial"], format_func=lambda n: RECIPES[n].title,
                           key="experiment_recipes", help="Each recipe with each scenario it can train: fine-tune "
                           "and lp-ft train the backbone, so they pair with finetune or scratch.")
a, b, c = right.columns(3)
seeds = a.number_input("Seeds", 1, 20, 5, key="experiment_seeds", help="Repeats of each cell.")
epochs = b.number_input("Epochs", 1, most_epochs, None, key="experiment_epochs", placeholder="the recipe's")
lr = c.number_input("Learning rate", 1e-7, 1.0, None, format="%.5f", key="experiment_lr", placeholder="the recipe's")
sizes = st.multiselect("Training pictures per class", SIZE_CHOICES, default=list(DEFAULT_SIZES),
                       format_func=size_text, key="experiment_sizes")
name = st.text_input("Name (optional: the same name and settings resume an experiment)", key="experiment_name")
leave_out = st.checkbox("Leave out the pictures on the data set's exclusion list", value=True,
                        key="experiment_leave_out", help="Set on Home or Your own data, from the health check. An "
                        "experiment with other pictures left out is another experiment.")
if limits := limits_text(settings.limits):
    st.caption(limits)
runs, plan = state.visible(list_runs().runs), None
try:
    data_dir = datasets[dataset]
    scan = state.scan(data_dir)
    scan.raise_if_invalid()
    configs = recipe_configs({"backbone": (backbones or [default_backbone()])[0], "epochs": epochs and int(epochs),
                              "lr": lr}, recipes or ["tutorial"], scenarios or ["frozen"])
    excluded = read_exclusions(data_dir, default_runs_dir()) if leave_out else []
    plan = ExperimentPlan(name.strip() or default_name(data_dir, list(configs.values()), excluded, backbones),
                          str(data_dir), next(iter(configs.values())), scenarios, list(range(int(seeds))), sizes,
                          excluded=excluded, recipes=configs, backbones=backbones or [default_backbone()])
    plan_summary(plan, scan.without(excluded), runs)
except (StudioError, ValueError) as exc:
    show_error(exc)
catalogue_expander()

if st.button("Start experiment", type="primary", disabled=plan is None or not backbones, key="start_experiment"):
    start_experiment(plan, data_dir, jobs)

st.subheader("Progress")
job_panel(jobs, idle="No experiment running. Choose the grid above and press Start experiment.")

st.subheader("Results")
allowed = {str(folder.resolve()) for folder in datasets.values()}
plans = [p for p in list_plans() if not settings.shared or p.data_dir in allowed]
if not plans:
    st.info("No experiment yet. Start one above; its results appear here as its cells are saved.")
    st.stop()
running = (job := jobs.snapshot()) and job.experiment
names = [p.name for p in plans]
shown = st.selectbox("Experiment", names, index=names.index(running) if running in names else 0,
                     key="experiment_shown")
outcome = results(plans[names.index(shown)], runs)
st.caption(f"{outcome.done} of {len(outcome.plan.cells())} cells saved · {plan_text(outcome.plan)}")
if not outcome.rows:
    st.info("No cell of this experiment is saved yet.")
    st.stop()

metrics = [key for key in METRICS if key != "test" or any(row.test for row in outcome.rows)]
metric = st.radio("Accuracy", metrics, format_func=METRICS.get, horizontal=True, key="experiment_metric")
st.plotly_chart(charts.accuracy_by_size(outcome, metric), config=charts.PLOTLY_CONFIG)
few_seeds = min(len(row.seeds) for row in outcome.rows) < FEWEST_SEEDS
st.caption("Each line is a scenario's (or backbone's) mean over seeds; the shaded band is its 95% interval (Student t "
           "over seeds). Few seeds give wide bands: add seeds to narrow them.")
if few_seeds:
    st.info(f"Some means here are of fewer than {FEWEST_SEEDS} seeds: an interval over 2 seeds spans nearly "
            "everything, so neither the chart nor the table shows one. Add seeds for intervals; meanwhile the "
            "paired verdicts below compare scenarios seed by seed on the same pictures, and do say something.")

sizes_saved = sorted({row.pictures_per_class for row in outcome.rows}, key=size_order)
size = st.select_slider("Trade-offs and learning curves at", sizes_saved, value=sizes_saved[-1],
                        format_func=lambda s: f"{size_text(s)} per class", key="experiment_curve_size")
trade_off_charts(outcome, size, metric)
groups = {f"{scenario} ({len(runs)} seeds)": runs for scenario in dict.fromkeys(r.scenario for r in outcome.rows)
          if (runs := outcome.runs_of(scenario, size))}
left, right = st.columns(2)
left.plotly_chart(charts.curves_with_bands(groups, "val_acc", "Validation accuracy per epoch"),
                  config=charts.PLOTLY_CONFIG)
right.plotly_chart(charts.curves_with_bands(groups, "train_loss", "Training loss per epoch"),
                   config=charts.PLOTLY_CONFIG)

results_table(outcome, "test" in metrics)
