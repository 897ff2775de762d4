"""What the Experiments page shows of an experiment: its grid and time before it starts, its start, and of its
results the trade-off charts, the table of means and the paired verdicts."""
from __future__ import annotations

import streamlit as st

from core.data import DatasetScan
from core.errors import StudioError
from core.eta import duration_text
from core.experiment import ExperimentPlan, ExperimentResults, estimate_seconds, mean_text, pending, size_text
from core.jobs import JobRequest, TrainingJobs
from core.runs import RunRecord, default_runs_dir
from dashboard import charts, state
from dashboard.widgets import runnable_backbones, runnable_scenarios, show_error


def plan_text(plan: ExperimentPlan) -> str:
    """The backbones and each recipe's epochs and rate, in a line."""
    backbones = ", ".join(dict.fromkeys(cell.backbone for cell in plan.cells()))
    recipes = " · ".join(f"{name}: {config.epochs} epochs, lr {config.lr:g}" for name, config in plan.recipes.items())
    return f"{backbones} · {recipes}"


def plan_summary(plan: ExperimentPlan, scan: DatasetScan, runs: list[RunRecord]) -> None:
    """The experiment's grid, what is saved of it and the time the rest will take, each backbone timed on itself."""
    with st.spinner("Estimating the time..."):
        estimate = estimate_seconds(plan, scan, pending(plan, runs, plan.grid()), runs)
    arms = len(plan.pairs())
    arm = ("backbone-scenario-recipe" if plan.several_recipes else "backbone-scenario") if len(plan.backbones) > 1 \
        else ("scenario-recipe pair" if plan.several_recipes else "scenario")
    grid = " × ".join(f"{n} {word if n == 1 else word + 's'}" for n, word in (
        (arms, arm), (len(plan.seeds), "seed"), (len(plan.sizes), "size")))
    todo = (f"{estimate.cells} to train: about **{duration_text(estimate.seconds)}** (from {estimate.basis})"
            if estimate.cells else "nothing to train: its results are below")
    left_out = f" {len(plan.excluded)} picture(s) on the exclusion list are left out." if plan.excluded else ""
    st.info(f"Experiment **{plan.name}**: {len(plan.grid())} cells ({grid}); {len(plan.grid()) - estimate.cells} "
            f"saved already, {todo}.{left_out}")


def start_experiment(plan: ExperimentPlan, data_dir, jobs: TrainingJobs) -> None:
    """Start the experiment's cells not saved yet, with the backbones (and scenarios) whose weights can be had."""
    try:
        if len(plan.backbones) > 1:
            plan.backbones = runnable_backbones(plan.backbones, plan.scenarios)
        elif runnable := runnable_scenarios(plan.backbones[0], plan.scenarios):
            plan.scenarios = runnable
        else:
            return
        if plan.backbones:
            jobs.start(JobRequest(data_dir=data_dir, configs=plan.arm_configs(), runs_dir=default_runs_dir(),
                                  experiment=plan), owner=state.owner())
    except (StudioError, ValueError) as exc:
        show_error(exc)


def trade_off_charts(outcome: ExperimentResults, size: int | None, metric: str) -> None:
    """With several backbones: accuracy against seconds per run and against parameters, at one size."""
    if not outcome.plan.several_backbones:
        return
    left, right = st.columns(2)
    for column, cost in zip((left, right), ("seconds", "parameters")):
        column.plotly_chart(charts.trade_off(outcome, size, cost, metric), config=charts.PLOTLY_CONFIG,
                            key=f"trade_off_{cost}")
    st.caption("Each point is a backbone's (and scenario's) mean over seeds with its 95% interval; the ringed points "
               "joined by the dotted line are the best trade-offs: none other is more accurate at no more cost. "
               "Points whose intervals overlap may not differ: the paired verdicts below say. Seconds per run are a "
               "run's time on its own: its training, and computing the frozen features the cells share.")


def results_table(outcome: ExperimentResults, with_test: bool) -> None:
    st.markdown("**Means over seeds, with 95% intervals**")
    several = outcome.plan.several_backbones
    st.dataframe([{"backbone · scenario" if several else "scenario": row.scenario,
                   "per class": size_text(row.pictures_per_class),
                   "seeds": len(row.seeds), "best val acc (optimistic)": mean_text(row.best_val),
                   "final val acc": mean_text(row.final_val),
                   **({"test acc": mean_text(row.test) if row.test else "-"} if with_test else {}),
                   "s / run": f"{row.seconds:.1f}", **({"params (M)": f"{row.parameters / 1e6:.1f}"} if several
                                                       else {})}
                  for row in outcome.rows], hide_index=True)
    if outcome.comparisons:
        st.markdown("**Is the difference real?** Paired over the same seeds (the same training pictures) and the "
                    "same pictures, by bootstrap:")
        st.markdown("\n".join(f"- {size_text(c.pictures_per_class)} per class: {c.text}"
                              for c in outcome.comparisons))
