"""The Train page's recipe: the recipe picker, its settings under Advanced, and the learning-rate finder."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from core.config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig
from core.errors import StudioError
from core.exclusions import read_exclusions
from core.lr_find import find_learning_rate
from core.models import SCENARIOS
from core.runs import default_runs_dir
from dashboard import charts, state
from dashboard.train_form import RECIPE_FORM, TrainChoices
from dashboard.widgets import show_error

_CURVE_KEY = "rate_curve"
# What the table in docs/recipes.md found, in a line: the pages' help follows it.
RECIPE_HELP = ("Measured on the tutorial's ants and bees (MobileNetV2, 5 seeds): LP-FT beat the tutorial's "
               "finetuning by 3.5 points and tied with the frozen backbone; fastai's fine-tune tied with the "
               "tutorial's with 25 pictures per class or more and fell behind with 5. On your pictures, compare them "
               "on the Experiments page. docs/recipes.md has the table.")


_WHOLE = ("epochs", "batch_size", "step_size", "head_epochs")


def _recipe_changed(most_epochs: int) -> None:
    """Another recipe brings its own settings: each widget is given its value (a value set through the session
    state reaches the browser's widget; a new default alone would not)."""
    named = TrainConfig.from_settings({"recipe": st.session_state["recipe"]})
    for name in RECIPE_FORM:
        value = getattr(named, name)
        if name == "epochs":
            value = min(value, most_epochs)
        if name != "recipe":
            st.session_state[name] = int(value) if name in _WHOLE else value if isinstance(value, str) else float(value)
    st.session_state.pop(_CURVE_KEY, None)


def recipe_form(shown: TrainChoices, most_epochs: int) -> dict:
    """The recipe picker and, under Advanced, the recipe's settings: the chosen values by name (with the seed)."""
    recipe = st.selectbox("Recipe", list(RECIPES), index=list(RECIPES).index(shown.recipe), key="recipe",
                          format_func=lambda name: RECIPES[name].title, on_change=_recipe_changed,
                          args=(most_epochs,),
                          help=RECIPE_HELP)
    st.caption(RECIPES[recipe].summary)
    knobs = shown.with_recipe(recipe)
    with st.expander(f"Advanced: the {recipe} recipe's settings"):
        a, b, c, d = st.columns(4)
        chosen = {
            "recipe": recipe,
            "epochs": a.number_input("Epochs (all phases)", 1, most_epochs, min(knobs.epochs, most_epochs),
                                     key="epochs"),
            "batch_size": b.number_input("Batch size", 1, 512, knobs.batch_size, key="batch_size"),
            "lr": c.number_input("Learning rate", 1e-7, 1.0, knobs.lr, format="%.6f", key="lr",
                                 help="The last layer's rate; with a spread, the first layers' is this / spread."),
            "momentum": d.number_input("Momentum (AdamW: beta1)", 0.0, 0.99, knobs.momentum, key="momentum"),
            "optimizer": a.selectbox("Optimiser", OPTIMIZERS, index=OPTIMIZERS.index(knobs.optimizer),
                                     key="optimizer"),
            "schedule": b.selectbox("Schedule", SCHEDULES, index=SCHEDULES.index(knobs.schedule), key="schedule",
                                    help="step: the rate x factor every step of epochs; one-cycle: up then down, "
                                    "each batch (fastai); cosine: a short warm-up, then down to 0, each batch."),
            "step_size": c.number_input("LR step (epochs)", 1, 500, knobs.step_size, key="step_size"),
            "gamma": d.number_input("LR factor", 0.01, 1.0, knobs.gamma, key="gamma"),
            "weight_decay": a.number_input("Weight decay", 0.0, 1.0, knobs.weight_decay, format="%.4f",
                                           key="weight_decay"),
            "label_smoothing": b.number_input("Label smoothing", 0.0, 0.9, knobs.label_smoothing,
                                              key="label_smoothing"),
            "head_epochs": c.number_input("Head epochs first", 0, most_epochs, knobs.head_epochs, key="head_epochs",
                                          help="Epochs in which the new last layer trains alone on the frozen "
                                          "backbone, before every layer trains."),
            "lr_spread": d.number_input("Rate spread", 1.0, 10000.0, knobs.lr_spread, key="lr_spread",
                                        help="The last layer's rate over the first layers': 1 is one rate for all."),
            "seed": a.number_input("Seed", 0, 2**31 - 1, shown.seed, key="seed"),
        }
    return {name: int(value) if name in ("epochs", "batch_size", "step_size", "head_epochs", "seed") else value
            for name, value in chosen.items()}


def _use(rate: float) -> None:
    st.session_state["lr"] = float(rate)


def learning_rate_finder(choices: TrainChoices, data_dir: Path) -> None:
    """A button that sweeps the rate for the first chosen scenario, then the curve with its suggestion, and a button
    that puts the suggestion into the form."""
    scenario = choices.scenarios[0] if choices.scenarios else None
    if scenario is None:
        return
    if st.button(f"Find a learning rate ({SCENARIOS[scenario].title.lower()}, {choices.recipe})", key="find_lr",
                 help="About 100 training steps at rising rates, on your data: the model is left as it was. "
                 "fastai's lr_find; the suggestion is its 'valley'."):
        bar = st.progress(0.0, text="Sweeping the learning rate...")
        try:
            config = choices.configs()[0]
            scan = state.scan(data_dir)
            if choices.leave_out:
                scan = scan.without(read_exclusions(data_dir, default_runs_dir()))
            curve = find_learning_rate(config, scan, on_step=lambda done, steps: bar.progress(
                done / steps, text=f"Sweeping the learning rate: step {done} of {steps}"))
            st.session_state[_CURVE_KEY] = (replace(choices, lr=0.0), curve)
        except (StudioError, ValueError) as exc:
            st.session_state.pop(_CURVE_KEY, None)
            show_error(exc)
        finally:
            bar.empty()
    found = st.session_state.get(_CURVE_KEY)
    if not found or found[0] != replace(choices, lr=0.0):
        return
    curve = found[1]
    st.plotly_chart(charts.rate_curve(curve), config=charts.PLOTLY_CONFIG, key="rate_chart")
    st.button(f"Use {curve.suggestion:.2e} as the learning rate", key="use_lr", on_click=_use,
              args=(float(f"{curve.suggestion:.2e}"),))
    st.caption(f"Swept {len(curve.rates)} rates ({curve.ended}). The suggestion lies on the longest stretch where "
               "the loss keeps falling, two thirds of the way down: a starting point to try, not a promise.")
