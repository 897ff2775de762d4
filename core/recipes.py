"""How a run learns, its recipe: the loss, the optimiser, the learning-rate schedule, the layer groups and their
rates, and the phases (what trains, for how many epochs). The training loop (core.loop) asks the recipe for each of
them and names none itself.

Three named recipes (core.config.RECIPES: each a set of values for a run's settings, every knob also settable on
its own):

- `tutorial`: the 2017 tutorial's. Cross-entropy, SGD with momentum, StepLR, one phase.
- `fine-tune`: fastai's `Learner.fine_tune`. The new head trains first on the frozen backbone (one-cycle,
  `pct_start` 0.99), then everything trains at half the base rate, spread over layer groups, the lowest at 1/100 of
  the highest (one-cycle, `pct_start` 0.3, starting at 1/5 of the peak). AdamW, weight decay 0.01.
- `lp-ft`: Kumar et al., ICLR 2022. A linear probe, the head fitted to convergence on the frozen backbone's
  features (logistic regression, as the paper fits it), then the whole network finetuned from that head at a small
  rate (1e-5, cosine schedule with warm-up). The backbone's BatchNorm statistics stay as pretrained (their weights
  train), so that finetuning starts from the very features the probe was fitted on: batches of 4 pictures move
  them at once (measured on the tutorial's data, MobileNetV2: 0.948 after the probe, 0.84 to 0.89 after 40 steps
  at 1e-5 or 1e-4). AdamW rather than the paper's SGD: with the statistics fixed, SGD's steps grew with gradient
  norms of 100 to 200 and accuracy fell to 0.68 within 40 steps at 1e-4; AdamW's steps do not grow with them.

Which of a run's settings define its recipe is said once here (`recipe_settings`): experiments key their cells on it
and Compare groups a recipe's repeats by it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from core.config import NamedRecipe, TrainConfig, get_recipe

# A run's settings that are not its recipe: its luck (the seed) and where and how fast it ran.
NOT_RECIPE = ("seed", "device", "workers")
# fastai's one-cycle: the rate ends at the peak / 1e5; momentum (Adam's beta1) cycles 0.95 -> 0.85 -> 0.95.
ONE_CYCLE_END_DIVISOR, ONE_CYCLE_MOMENTA = 1e5, (0.85, 0.95)
WARMUP_SHARE, WARMUP_START = 0.1, 0.01  # cosine: the first 10% of the steps rise linearly from 1% of the rate
PROBE_MAX_ITERATIONS = 1000  # the linear probe's L-BFGS iterations, at most


def recipe_settings(config: TrainConfig, scenario: bool = True) -> dict:
    """The settings that define how a run learns, by name: two runs that share them differ by their seed or by
    where they ran. Without `scenario`, the scenario is left out too (an experiment's grid varies it)."""
    left_out = NOT_RECIPE if scenario else (*NOT_RECIPE, "scenario")
    return {name: value for name, value in config.to_dict().items() if name not in left_out}


@dataclass(frozen=True)
class Phase:
    """A stretch of training. `trains`: "head" (the new last layer alone, on the frozen backbone) or "scenario" (what
    the scenario trains). A probe has no epochs: it is fitted to convergence. `rate` is the highest group's peak."""

    name: str
    trains: str
    epochs: int
    rate: float
    spread: float = 1.0  # the highest group's rate over the lowest's
    rise: float = 0.25  # one-cycle: the share of the steps over which the rate rises to its peak
    start_divisor: float = 25.0  # one-cycle: the rate starts at the peak / this

    @property
    def probe(self) -> bool:
        return self.epochs == 0


@dataclass(frozen=True)
class LayerGroup:
    name: str
    parameters: list[nn.Parameter] = field(repr=False)


@dataclass(frozen=True)
class Recipe:
    """A run's recipe, read from its settings (`of`): what the loop asks for, phase by phase."""

    name: str
    epochs: int
    lr: float
    momentum: float
    step_size: int
    gamma: float
    optimizer_name: str = "sgd"
    schedule_name: str = "step"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    head_epochs: int = 0
    lr_spread: float = 1.0

    @classmethod
    def of(cls, config: TrainConfig) -> Recipe:
        return cls(config.recipe, config.epochs, config.lr, config.momentum, config.step_size, config.gamma,
                   config.optimizer, config.schedule, config.weight_decay, config.label_smoothing, config.head_epochs,
                   config.lr_spread)

    @property
    def named(self) -> NamedRecipe:
        return get_recipe(self.name)

    @property
    def phases(self) -> list[Phase]:
        """The probe or the head's epochs first, when the recipe has them, then what the scenario trains."""
        named = self.named
        if named.probe:
            return [Phase("probe", "head", 0, self.lr), Phase("finetune", "scenario", self.epochs, self.lr,
                                                              self.lr_spread)]
        if self.head_epochs:
            return [Phase("head", "head", self.head_epochs, self.lr, rise=0.99),
                    Phase("unfrozen", "scenario", self.epochs - self.head_epochs, self.lr * named.unfreeze_factor,
                          self.lr_spread, rise=0.3, start_divisor=5.0)]
        return [Phase("train", "scenario", self.epochs, self.lr, self.lr_spread)]

    def loss(self) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def groups(self, parameters: Sequence[nn.Parameter], head: Sequence[nn.Parameter], phase: Phase,
               ) -> list[LayerGroup]:
        """The trainable `parameters` as layer groups: one ("all", or "head" when only the head trains) unless the
        phase spreads its rates; then the backbone's first half, its second half (by parameters, in the model's
        order) and the head, as fastai splits a ResNet."""
        trainable = [p for p in parameters if p.requires_grad]
        head_ids = {id(p) for p in head}
        body = [p for p in trainable if id(p) not in head_ids]
        if not body:
            return [LayerGroup("head", trainable)]
        if phase.spread == 1:
            return [LayerGroup("all", trainable)]
        sizes = torch.tensor([p.numel() for p in body]).cumsum(0)
        cut = max(1, int((sizes <= sizes[-1] / 2).sum()))
        return [LayerGroup("backbone, first half", body[:cut]), LayerGroup("backbone, second half", body[cut:]),
                LayerGroup("head", [p for p in trainable if id(p) in head_ids])]

    def group_rates(self, groups: list[LayerGroup], phase: Phase) -> list[float]:
        """Each group's peak rate, evenly spread on a log scale from the phase's rate / spread up to its rate
        (fastai's `even_mults`)."""
        if len(groups) == 1:
            return [phase.rate]
        low, steps = phase.rate / phase.spread, len(groups) - 1
        return [low * (phase.rate / low) ** (index / steps) for index in range(len(groups))]

    def optimizer(self, groups: list[LayerGroup], phase: Phase) -> torch.optim.Optimizer:
        rates = self.group_rates(groups, phase)
        parameters = ([{"params": group.parameters, "lr": rate} for group, rate in zip(groups, rates)]
                      if len(groups) > 1 else groups[0].parameters)
        if self.optimizer_name == "adamw":  # fastai's Adam: betas (0.9, 0.99), eps 1e-5, decoupled weight decay
            return torch.optim.AdamW(parameters, lr=rates[-1], betas=(self.momentum, 0.99), eps=1e-5,
                                     weight_decay=self.weight_decay)
        return torch.optim.SGD(parameters, lr=rates[-1], momentum=self.momentum, weight_decay=self.weight_decay)

    def schedule(self, optimizer: torch.optim.Optimizer, phase: Phase, batches_per_epoch: int
                 ) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
        """The phase's schedule, and whether it steps after every batch (else after every epoch)."""
        if self.schedule_name == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.step_size, gamma=self.gamma), False
        steps = max(1, phase.epochs * batches_per_epoch)
        if self.schedule_name == "one-cycle":
            peaks = [group["lr"] for group in optimizer.param_groups]
            low, high = ONE_CYCLE_MOMENTA
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=peaks, total_steps=steps, pct_start=phase.rise, anneal_strategy="cos",
                div_factor=phase.start_divisor, final_div_factor=ONE_CYCLE_END_DIVISOR / phase.start_divisor,
                cycle_momentum=self.momentum > 0, base_momentum=low, max_momentum=high), True
        warmup = min(steps - 1, math.ceil(WARMUP_SHARE * steps))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps - warmup))
        if not warmup:
            return cosine, True
        rising = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [rising, cosine], milestones=[warmup]), True


def fit_probe(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> int:
    """Fit `head` to convergence on `features` as a linear probe: multinomial logistic regression with
    scikit-learn's default L2 penalty (C=1), L-BFGS, as Kumar et al. fit theirs. Returns its iterations."""
    from sklearn.linear_model import LogisticRegression

    classes = head.out_features
    x, y = features.detach().double().cpu().numpy(), labels.cpu().numpy()
    weight, bias = torch.zeros(classes, x.shape[1], dtype=torch.float64), torch.zeros(classes, dtype=torch.float64)
    if len(set(y.tolist())) < 2:  # one class to learn: it is always the answer
        bias[int(y[0])] = 1.0
        _copy_into(head, weight, bias)
        return 0
    model = LogisticRegression(C=1.0, max_iter=PROBE_MAX_ITERATIONS).fit(x, y)
    found = torch.as_tensor(model.classes_, dtype=torch.long)
    coef, intercept = torch.as_tensor(model.coef_), torch.as_tensor(model.intercept_)
    if len(found) == 2 and coef.shape[0] == 1:  # the binary form: one row, the second class's logit minus the first's
        coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
    weight[found], bias[found] = coef, intercept
    _copy_into(head, weight, bias)
    return int(max(model.n_iter_))


def _copy_into(head: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
