"""Plotly figures for the pages, built from runs and histories."""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.predict import Prediction
from core.runs import RunRecord
from core.train import EpochStats

COLORS = {"finetune": "#1f77b4", "frozen": "#2ca02c", "frozen-tutorial": "#ff7f0e", "scratch": "#d62728"}
FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#17becf"]


def color_for(scenario: str, index: int = 0) -> str:
    return COLORS.get(scenario, FALLBACK[index % len(FALLBACK)])


def _layout(fig: go.Figure, title: str, height: int = 340) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.2), hovermode="x unified")
    return fig


def live_history(series: dict[str, list[EpochStats]]) -> go.Figure:
    """Loss and accuracy per epoch for each scenario of a running job, train dashed and val solid."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for index, (scenario, history) in enumerate(series.items()):
        epochs = [e.epoch for e in history]
        color = color_for(scenario, index)
        for col, (train_key, val_key) in enumerate((("train_loss", "val_loss"), ("train_acc", "val_acc")), start=1):
            fig.add_scatter(x=epochs, y=[getattr(e, train_key) for e in history], name=f"{scenario} train",
                            line=dict(color=color, dash="dash"), row=1, col=col, showlegend=col == 1)
            fig.add_scatter(x=epochs, y=[getattr(e, val_key) for e in history], name=f"{scenario} val",
                            line=dict(color=color), row=1, col=col, showlegend=col == 1)
    fig.update_xaxes(title_text="epoch", dtick=1)
    return _layout(fig, "", height=360)


def overlay(runs: list[RunRecord], key: str, title: str, labels: dict[str, str]) -> go.Figure:
    fig = go.Figure()
    for index, run in enumerate(runs):
        fig.add_scatter(x=[e.epoch for e in run.history], y=[getattr(e, key) for e in run.history],
                        name=labels[run.id], mode="lines+markers", line=dict(color=color_for(run.scenario, index)))
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title)


def train_against_val(run: RunRecord, label: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    epochs = [e.epoch for e in run.history]
    for col, keys in enumerate((("train_loss", "val_loss"), ("train_acc", "val_acc")), start=1):
        for key, color in zip(keys, ("#7f7f7f", color_for(run.scenario))):
            fig.add_scatter(x=epochs, y=[getattr(e, key) for e in run.history], name=key.split("_")[0],
                            line=dict(color=color), row=1, col=col, showlegend=col == 1)
    if run.best_epoch:
        fig.add_vline(x=run.best_epoch, line_dash="dot", line_color="gray", annotation_text="best", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, label, height=300)


def seconds_per_epoch(runs: list[RunRecord], labels: dict[str, str]) -> go.Figure:
    fig = go.Figure()
    for index, run in enumerate(runs):
        fig.add_bar(x=[e.epoch for e in run.history], y=[e.seconds for e in run.history],
                    name=f"{labels[run.id]} (total {run.seconds:.0f} s)", marker_color=color_for(run.scenario, index))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="seconds")
    return _layout(fig, "Seconds per epoch")


def parameters(runs: list[RunRecord], labels: dict[str, str]) -> go.Figure:
    names = [labels[r.id] for r in runs]
    fig = go.Figure()
    fig.add_bar(y=names, x=[r.total_params for r in runs], name="total", orientation="h", marker_color="#c7c7c7")
    fig.add_bar(y=names, x=[r.trainable_params for r in runs], name="trainable", orientation="h",
                marker_color=[color_for(r.scenario, i) for i, r in enumerate(runs)])
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(type="log", title_text="parameters (log scale)")
    return _layout(fig, "Trainable against total parameters", height=120 + 60 * len(runs))


def confusion_matrix(run: RunRecord, label: str) -> go.Figure:
    names = run.class_names
    counts = run.val_predictions.confusion(len(names)) if run.val_predictions else [[0] * len(names) for _ in names]
    fig = go.Figure(go.Heatmap(z=counts, x=names, y=names, text=counts, texttemplate="%{text}",
                               colorscale="Blues", showscale=False))
    fig.update_xaxes(title_text="predicted")
    fig.update_yaxes(title_text="actual", autorange="reversed")
    return _layout(fig, label, height=300)


def probabilities(prediction: Prediction, scenario: str) -> go.Figure:
    names = list(prediction.probabilities)
    values = list(prediction.probabilities.values())
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", text=[f"{v:.1%}" for v in values],
                           textposition="auto", marker_color=color_for(scenario)))
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    return _layout(fig, "", height=80 + 40 * len(names))
