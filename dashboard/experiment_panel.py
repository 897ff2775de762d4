"""What the Experiments page shows of an experiment's results: the table of means and the paired verdicts."""
from __future__ import annotations

import streamlit as st

from core.experiment import ExperimentPlan, ExperimentResults, mean_text, size_text


def plan_text(plan: ExperimentPlan) -> str:
    """The backbone and each recipe's epochs and rate, in a line."""
    recipes = " · ".join(f"{name}: {config.epochs} epochs, lr {config.lr:g}" for name, config in plan.recipes.items())
    return f"{plan.recipe.backbone} · {recipes}"


def results_table(outcome: ExperimentResults, with_test: bool) -> None:
    st.markdown("**Means over seeds, with 95% intervals**")
    st.dataframe([{"scenario": row.scenario, "per class": size_text(row.pictures_per_class),
                   "seeds": len(row.seeds), "best val acc (optimistic)": mean_text(row.best_val),
                   "final val acc": mean_text(row.final_val),
                   **({"test acc": mean_text(row.test) if row.test else "-"} if with_test else {}),
                   "s / run": f"{row.seconds:.1f}"}
                  for row in outcome.rows], hide_index=True)
    if outcome.comparisons:
        st.markdown("**Is the difference real?** Paired over the same seeds (the same training pictures) and the "
                    "same pictures, by bootstrap:")
        st.markdown("\n".join(f"- {size_text(c.pictures_per_class)} per class: {c.text}"
                              for c in outcome.comparisons))
