"""A truly frozen backbone's features, computed once and cached: its head then trains on them alone, as many epochs
as the recipe asks, without running the backbone again. The Trainer computes them (core.train); this module says
when they may be cached, what the head is, and how they are kept and drawn.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from core.backbones import Backbone
from core.models import BuiltModel, Scenario, head_path


def cacheable(scenario: Scenario, backbone: Backbone) -> bool:
    """Features can be cached only when the backbone is truly fixed, BatchNorm statistics included, and its head
    trains on pooled features (Backbone.pooled_head)."""
    return not scenario.train_backbone and not scenario.backbone_batchnorm_updates and backbone.pooled_head


def head_of(built: BuiltModel) -> tuple[nn.Module, str, nn.Module]:
    """(parent, name, module) of what trains on the pooled features (core.models.head_path)."""
    parent_name, _, name = head_path(built.model).rpartition(".")
    parent = built.model.get_submodule(parent_name) if parent_name else built.model
    return parent, name, getattr(parent, name)


@contextmanager
def headless(built: BuiltModel):
    """The model with `head_of` it replaced by Identity: it returns the features that the head sees."""
    parent, name, head = head_of(built)
    setattr(parent, name, nn.Identity())
    try:
        yield built.model
    finally:
        setattr(parent, name, head)


@dataclass
class CachedFeatures:
    """A frozen backbone's features: of `views` augmented views of every training picture, (pictures, views,
    features) with the labels, and of every evaluation picture ("val", and "test" when there is one)."""

    train: TensorDataset
    evaluation: dict[str, TensorDataset]

    def select(self, indices: list[int]) -> CachedFeatures:
        """Only the training pictures at `indices` (in the data set's order); every evaluation picture stays."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.train.tensors[0].device)
        return CachedFeatures(TensorDataset(*(tensor[index] for tensor in self.train.tensors)), self.evaluation)


class RandomView(Dataset):
    """Cached training features: one of the picture's augmented views, drawn at every access."""

    def __init__(self, features: TensorDataset):
        self.views, self.labels = features.tensors

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.views[index, torch.randint(self.views.size(1), ()).item()], self.labels[index]

    def every_view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every view of every picture as a row, with its label."""
        return self.views.flatten(0, 1), self.labels.repeat_interleave(self.views.size(1))
