"""What the Train form remembers: the choices of the last Start, kept in the browser session (across pages) and
in the page's address (across reloads); while a job runs, that job's own settings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import streamlit as st

from core.config import RECIPES
from core.errors import StudioError
from core.eta import duration_text
from core.exclusions import read_exclusions
from core.experiment import estimate_training
from core.jobs import JobSnapshot
from core.models import BACKBONES, SCENARIOS, TUTORIAL_SCENARIOS, local_backbones
from core.runs import default_runs_dir, list_runs
from core.train import TrainConfig
from dashboard import state

ANOTHER_FOLDER = "Another folder..."
LONG_JOB_S = 15 * 60  # an estimate past this is said with a warning and a quicker choice
_SESSION_KEY = "train_choices"
_DEFAULTS = TrainConfig()
# The recipe's settings that the form shows (under Advanced), each also the key of its widget.
RECIPE_FORM = ("epochs", "batch_size", "lr", "momentum", "step_size", "gamma", "recipe", "optimizer", "schedule",
               "weight_decay", "label_smoothing", "head_epochs", "lr_spread")


def default_backbone() -> str:
    """The tutorial's backbone, unless its weights are not here and another's are."""
    local = local_backbones()
    return _DEFAULTS.backbone if _DEFAULTS.backbone in local or not local else local[0]


@dataclass
class TrainChoices:
    backbone: str = field(default_factory=default_backbone)
    scenarios: list[str] = field(default_factory=lambda: list(TUTORIAL_SCENARIOS))
    dataset: str | None = None  # a data set's label on the Train page; None: the first one
    folder: str = ""  # for ANOTHER_FOLDER
    epochs: int = _DEFAULTS.epochs
    batch_size: int = _DEFAULTS.batch_size
    lr: float = _DEFAULTS.lr
    momentum: float = _DEFAULTS.momentum
    step_size: int = _DEFAULTS.step_size
    gamma: float = _DEFAULTS.gamma
    seed: int = _DEFAULTS.seed
    leave_out: bool = True  # the pictures on the data set's exclusion list
    recipe: str = _DEFAULTS.recipe
    optimizer: str = _DEFAULTS.optimizer
    schedule: str = _DEFAULTS.schedule
    weight_decay: float = _DEFAULTS.weight_decay
    label_smoothing: float = _DEFAULTS.label_smoothing
    head_epochs: int = _DEFAULTS.head_epochs
    lr_spread: float = _DEFAULTS.lr_spread

    def configs(self) -> list[TrainConfig]:
        return [TrainConfig.from_settings(asdict(self), scenario=scenario) for scenario in self.scenarios]

    def with_recipe(self, recipe: str) -> TrainChoices:
        """These choices, or with another recipe its own values of the recipe's settings (core.recipes)."""
        if recipe == self.recipe:
            return self
        named = TrainConfig.from_settings({"recipe": recipe})
        return replace(self, **{name: getattr(named, name) for name in RECIPE_FORM})

    @classmethod
    def from_query(cls, params) -> TrainChoices | None:
        """The choices in the page's address (st.query_params), or None when it holds none that fit."""
        if "backbone" not in params:
            return None
        choices, values = cls(), {}
        for item in fields(cls):
            if item.name not in params:
                continue
            text = params.get_all(item.name) if item.name == "scenarios" else params[item.name]
            try:
                if isinstance(getattr(choices, item.name), bool):
                    values[item.name] = text == "True"
                    continue
                values[item.name] = type(getattr(choices, item.name))(text) if item.name != "dataset" else text
            except (TypeError, ValueError):
                continue
        chosen = cls(**{**asdict(choices), **values})
        if chosen.backbone not in BACKBONES or not set(chosen.scenarios) <= set(SCENARIOS) or (
                chosen.recipe not in RECIPES):
            return None
        return chosen

    def to_query(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value not in (None, "")}


def from_job(job: JobSnapshot, dataset_label: str | None) -> TrainChoices:
    config = job.configs[0]
    return TrainChoices(backbone=config.backbone, scenarios=[c.scenario for c in job.configs], dataset=dataset_label,
                        folder="" if dataset_label else job.data_dir, seed=config.seed,
                        **{name: getattr(config, name) for name in RECIPE_FORM})


def remembered(job: JobSnapshot | None, datasets: dict) -> TrainChoices:
    """What the form shows: the running job's settings, else the last Start of this session, else the page's
    address, else the tutorial's recipe."""
    if job and job.running:
        label = next((label for label, folder in datasets.items() if str(folder) == job.data_dir), None)
        return from_job(job, label)
    kept = st.session_state.get(_SESSION_KEY)
    if kept:
        st.query_params.from_dict(kept.to_query())  # back from another page: the address keeps them for a reload
    return kept or TrainChoices.from_query(st.query_params) or TrainChoices()


def remember(choices: TrainChoices) -> None:
    st.session_state[_SESSION_KEY] = choices
    st.query_params.from_dict(choices.to_query())


def training_estimate(choices: TrainChoices, data_dir) -> None:
    """The time the chosen training will take, said before Start (core.experiment.estimate_training, as the
    Experiments page estimates), with a warning and a quicker choice when it is long. Says nothing while the data
    set or the recipe cannot be trained on: Start says why."""
    try:
        scan = state.scan(data_dir)
        scan.raise_if_invalid()
        if choices.leave_out:
            scan = scan.without(read_exclusions(data_dir, default_runs_dir()))
        with st.spinner("Estimating the time..."):
            estimate = estimate_training(choices.configs(), scan, state.visible(list_runs().runs))
    except (StudioError, ValueError):
        return
    text = (f"Estimated time: about **{duration_text(estimate.seconds)}** for {len(choices.scenarios)} scenario(s) of "
            f"{choices.epochs} epochs on {len(scan.samples['train'])} training pictures (from {estimate.basis}).")
    if estimate.seconds > LONG_JOB_S:
        st.warning(f"{text} That is long on this machine: fewer epochs, or the frozen scenario alone (it trains only "
                   "the last layer, on features computed once), take a fraction of it.")
    else:
        st.caption(text)
