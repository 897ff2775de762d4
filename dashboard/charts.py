"""Plotly figures for the pages, built from runs and histories.

Every figure has its title at the top left and its legend in a row of its own above the plot area, so neither
meets an axis title nor Plotly's toolbar (top right; PLOTLY_CONFIG shows it on hover only). Epoch axes tick at
whole epochs. A run with no finished epoch has nothing to chart: its own figures are None, overlays leave it out.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.experiment import FEWEST_SEEDS, ExperimentResults, learning_curve, repeats, size_order, size_text
from core.lr_find import RateCurve
from core.predict import Prediction
from core.runs import RunRecord
from core.stats import Estimate
from core.train import EpochStats

COLORS = {"finetune": "#1f77b4", "frozen": "#2ca02c", "frozen-tutorial": "#ff7f0e", "scratch": "#d62728"}
FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39",
            "#7b4173"]
TRAIN_COLOR = "#7f7f7f"
TRAIN_ALPHA = 0.45  # a live chart's train line: its scenario's colour, paler than val
TOTAL_COLOR = "#c7c7c7"  # all parameters
TRAINABLE_COLOR = "#393b79"  # trainable parameters
PER_EPOCH_COLOR = "#3182bd"
ONE_OFF_COLOR = "#fd8d3c"

# Room at the top of a figure, in pixels: a row for Plotly's toolbar, the title, and each row of the legend.
TOOLBAR_ROOM = 30
TITLE_ROOM = 26
LEGEND_ROOM = 24
PHONE_WIDTH, LEGEND_SYMBOL, LEGEND_CHAR = 330, 50, 7  # pixels: a legend entry takes its symbol and its letters
# For st.plotly_chart(config=...): the toolbar on hover only, without the logo and the selection tools.
PLOTLY_CONFIG = {"displayModeBar": "hover", "displaylogo": False,
                 "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "zoomIn2d", "zoomOut2d"]}

NOTHING_TO_CHART = "no epoch finished: nothing to chart"
PER_EPOCH = "per epoch (mean of epochs)"
ONE_OFF = "one-off: loading, feature caching"
# The Compare page's gallery: pictures per page, and their width in pixels (two to a row on a 390 px phone).
GALLERY_PAGE = 12
GALLERY_WIDTH = 150


def color_for(scenario: str, index: int = 0) -> str:
    return COLORS.get(scenario, FALLBACK[index % len(FALLBACK)])


def charted(runs: list[RunRecord]) -> list[RunRecord]:
    """The runs with at least one finished epoch: the others have no history to chart."""
    return [run for run in runs if run.history]


def one_off_seconds(run: RunRecord) -> float:
    """The run's time outside its epochs: loading the pictures, caching a frozen backbone's features, setup."""
    return max(run.seconds - sum(epoch.seconds for epoch in run.history), 0.0)


def _legend_rows(fig: go.Figure) -> int:
    """How many rows the horizontal legend takes on a phone, about PHONE_WIDTH pixels wide: 0 without one."""
    names = [trace.name for trace in fig.data if trace.showlegend is not False and trace.name]
    rows, used = (1, 0) if names else (0, 0)
    for width in (LEGEND_SYMBOL + LEGEND_CHAR * len(name) for name in names):  # entries wrap whole, as Plotly's
        if used and used + width > PHONE_WIDTH:
            rows, used = rows + 1, 0
        used += width
    return rows


def _layout(fig: go.Figure, title: str, height: int = 340, hovermode: str = "x unified") -> go.Figure:
    """From the top: a row kept free for Plotly's toolbar, the title at the left, the legend in horizontal rows,
    then the plot area of `height` pixels. Nothing there meets the toolbar or an axis title."""
    rows = _legend_rows(fig)
    top = TOOLBAR_ROOM + (TITLE_ROOM if title else 0) + LEGEND_ROOM * rows
    fig.update_layout(
        title=dict(text=title, x=0, xref="container", xanchor="left", y=1, yref="container", yanchor="top",
                   pad=dict(l=10, t=TOOLBAR_ROOM), font=dict(size=14)),
        height=height + top, margin=dict(l=10, r=10, t=top, b=10), showlegend=rows > 0,
        legend=dict(orientation="h", x=0, xanchor="left", y=1.0, yanchor="bottom"), hovermode=hovermode,
        hoverlabel=dict(namelength=-1))
    return fig


def _epoch_axis(fig: go.Figure, epochs: int) -> None:
    """Ticks at whole epochs only: every epoch up to 10, else a round step giving at most 10 ticks."""
    step = next((s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500) if epochs <= 10 * s), -(-epochs // 10))
    pad = max(0.25, 0.02 * epochs)
    fig.update_xaxes(title_text="epoch", tickmode="linear", tick0=1 if step == 1 else 0, dtick=step, tickformat="d",
                     range=[1 - pad, max(epochs, 1) + pad])


def _history_pair(fig: go.Figure) -> None:
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)


def live_history(series: dict[str, list[EpochStats]]) -> go.Figure:
    """Loss and accuracy per epoch for each scenario of a running job: val solid in the scenario's colour, train
    dashed in a paler shade of it."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)
    for index, (scenario, history) in enumerate(series.items()):
        epochs = [e.epoch for e in history]
        color = color_for(scenario, index)
        for col, (train_key, val_key) in enumerate((("train_loss", "val_loss"), ("train_acc", "val_acc")), start=1):
            fig.add_scatter(x=epochs, y=[getattr(e, train_key) for e in history], name=f"{scenario} train",
                            line=dict(color=_rgba(color, TRAIN_ALPHA), dash="dash"), row=1, col=col,
                            showlegend=col == 1)
            fig.add_scatter(x=epochs, y=[getattr(e, val_key) for e in history], name=f"{scenario} val",
                            line=dict(color=color), row=1, col=col, showlegend=col == 1)
    _epoch_axis(fig, max((len(history) for history in series.values()), default=1))
    _history_pair(fig)
    return _layout(fig, "", height=320)


def _rgba(color: str, alpha: float) -> str:
    red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def add_band(fig: go.Figure, x: list, estimates: list[Estimate], name: str, color: str, dash: str | None = None,
             **where) -> None:
    """The mean as a line with its 95% interval shaded around it (a band that hovers with its bounds). Means of fewer
    than FEWEST_SEEDS runs get no band: it would fill the chart and say nothing."""
    bounds = [[e.low, e.high, e.n] for e in estimates]
    banded = all(e.n >= FEWEST_SEEDS for e in estimates)
    if banded:
        fig.add_scatter(x=x, y=[e.high for e in estimates], mode="lines", line=dict(width=0), showlegend=False,
                        hoverinfo="skip", legendgroup=name, **where)
        fig.add_scatter(x=x, y=[e.low for e in estimates], mode="lines", line=dict(width=0), fill="tonexty",
                        fillcolor=_rgba(color, 0.2), showlegend=False, hoverinfo="skip", legendgroup=name, **where)
    interval = ("[%{customdata[0]:.3f}, %{customdata[1]:.3f}], %{customdata[2]} runs" if banded else
                f"(%{{customdata[2]}} runs: an interval needs {FEWEST_SEEDS})")
    fig.add_scatter(x=x, y=[e.value for e in estimates], name=name, mode="lines+markers", legendgroup=name,
                    line=dict(color=color, dash=dash), customdata=bounds,
                    hovertemplate=f"%{{y:.3f}} {interval}<extra>%{{fullData.name}}</extra>", **where)


def overlay(runs: list[RunRecord], key: str, title: str, labels: dict[str, str]) -> go.Figure:
    """One line per run with a finished epoch; runs that repeat one recipe with other seeds (core.experiment.repeats)
    are drawn as their mean with its 95% band over seeds instead."""
    fig = go.Figure()
    runs = charted(runs)
    for index, group in enumerate(repeats(runs)):
        color = color_for(group[0].scenario, index)
        if len({run.config.seed for run in group}) > 1:
            curve = learning_curve(group, key)
            add_band(fig, list(range(1, len(curve) + 1)), curve, f"{labels[group[0].id]} · mean of {len(group)} runs",
                     color)
            continue
        for run in group:
            fig.add_scatter(x=[e.epoch for e in run.history], y=[getattr(e, key) for e in run.history],
                            name=labels[run.id], mode="lines+markers", line=dict(color=color))
    _epoch_axis(fig, max((len(run.history) for run in runs), default=1))
    return _layout(fig, title, height=300)


def accuracy_by_size(outcome: ExperimentResults, metric: str = "best_val") -> go.Figure:
    """Accuracy against training pictures per class (log axis): per scenario, the mean over seeds with its 95%
    band. `metric` is a SizeResult field: best_val, final_val or test."""
    fig = go.Figure()
    scenarios = list(dict.fromkeys(row.scenario for row in outcome.rows))
    for index, scenario in enumerate(scenarios):
        rows = [row for row in outcome.rows if row.scenario == scenario and getattr(row, metric)]
        if rows:
            add_band(fig, [row.train_pictures for row in rows], [getattr(row, metric) for row in rows], scenario,
                     color_for(scenario, index))
    ticks: dict[float, list[str]] = {}  # sizes past what the classes hold train on the same pictures: one tick
    for row in sorted(outcome.rows, key=lambda r: (r.train_pictures, size_order(r.pictures_per_class))):
        names = ticks.setdefault(row.train_pictures, [])
        if (name := size_text(row.pictures_per_class)) not in names:
            names.append(name)
    fig.update_xaxes(type="log", title_text="training pictures per class (log scale)", tickvals=list(ticks),
                     ticktext=[f"{x:g}" if names == [f"{x:g}"] else f"{' / '.join(names)} ({x:g})"
                               for x, names in ticks.items()])
    fig.update_yaxes(title_text="accuracy", tickformat=".0%")
    return _layout(fig, "Accuracy against training pictures per class", height=340, hovermode="closest")


TRADE_OFF_COSTS = {"seconds": ("seconds per run (log scale)", "Accuracy against time per run"),
                   "parameters": ("parameters (log scale)", "Accuracy against parameters")}


def trade_off(outcome: ExperimentResults, pictures_per_class: int | None, cost: str = "seconds",
              metric: str = "best_val") -> go.Figure:
    """Each arm at one size as a point: its accuracy's mean over seeds, with its 95% interval as an error bar (from
    FEWEST_SEEDS seeds), against its `cost` ("seconds" per run or "parameters"). The best trade-offs (no other arm
    more accurate at no more cost) are ringed and joined by a dashed line."""
    axis, title = TRADE_OFF_COSTS[cost]
    rows = [row for row in outcome.rows if row.pictures_per_class == pictures_per_class and getattr(row, metric)]
    fig = go.Figure()
    for index, row in enumerate(rows):
        estimate = getattr(row, metric)
        banded = estimate.n >= FEWEST_SEEDS
        fig.add_scatter(x=[getattr(row, cost)], y=[estimate.value], name=row.scenario, mode="markers",
                        marker=dict(size=11, color=color_for(row.scenario, index)),
                        error_y=dict(type="data", symmetric=False, array=[estimate.high - estimate.value],
                                     arrayminus=[estimate.value - estimate.low], visible=banded),
                        hovertemplate=(f"%{{y:.3f}} [{estimate.low:.3f}, {estimate.high:.3f}], " if banded else
                                       f"%{{y:.3f}} (an interval needs {FEWEST_SEEDS} seeds), ")
                        + f"{len(row.seeds)} seeds · %{{x:,.{1 if cost == 'seconds' else 0}f}} "
                        + ("s / run" if cost == "seconds" else "parameters") + "<extra>%{fullData.name}</extra>")
    front = outcome.trade_offs(pictures_per_class, cost, metric)
    if front:
        fig.add_scatter(x=[getattr(row, cost) for row in front], y=[getattr(row, metric).value for row in front],
                        name="best trade-offs", mode="lines+markers", line=dict(color="#444", dash="dot", shape="hv"),
                        marker=dict(size=19, color="rgba(0,0,0,0)", line=dict(color="#444", width=2)),
                        hoverinfo="skip")
    fig.update_xaxes(type="log", title_text=axis)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%")
    return _layout(fig, f"{title}, {size_text(pictures_per_class)} per class", height=340, hovermode="closest")


def curves_with_bands(groups: dict[str, list[RunRecord]], key: str, title: str) -> go.Figure:
    """Per group of repeated runs (one recipe, several seeds): `key` per epoch, the mean with its 95% band."""
    fig = go.Figure()
    longest = 1
    for index, (name, runs) in enumerate(groups.items()):
        curve = learning_curve(runs, key)
        longest = max(longest, len(curve))
        add_band(fig, list(range(1, len(curve) + 1)), curve, name, color_for(runs[0].scenario, index))
    _epoch_axis(fig, longest)
    if key.endswith("acc"):
        fig.update_yaxes(tickformat=".0%")
    return _layout(fig, title, height=300)


def train_against_val(run: RunRecord, label: str) -> go.Figure | None:
    """Train (grey) and validation (the scenario's colour) loss and accuracy; None when no epoch finished."""
    if not run.history:
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.15)
    epochs = [e.epoch for e in run.history]
    for col, keys in enumerate((("train_loss", "val_loss"), ("train_acc", "val_acc")), start=1):
        for key, color in zip(keys, (TRAIN_COLOR, color_for(run.scenario))):
            fig.add_scatter(x=epochs, y=[getattr(e, key) for e in run.history], name=key.split("_")[0],
                            line=dict(color=color), row=1, col=col, showlegend=col == 1)
    if run.best_epoch:
        fig.add_vline(x=run.best_epoch, line_dash="dot", line_color="gray", annotation_text="best", row=1, col=2)
    _epoch_axis(fig, len(run.history))
    _history_pair(fig)
    return _layout(fig, label, height=260)


def seconds_per_epoch(runs: list[RunRecord], labels: dict[str, str], names: dict[str, str]) -> go.Figure:
    """For each run with a finished epoch (on the y axis by its short label, by its whole name on hover): the mean
    seconds of its epochs, and apart from them the one-off seconds before and between the epochs (loading pictures,
    caching a frozen backbone's features)."""
    runs = charted(runs)
    # customdata: the whole name, epochs, the run's total seconds
    data = [[names[run.id], len(run.history), run.seconds] for run in runs]
    fig = go.Figure()
    fig.add_bar(y=[labels[run.id] for run in runs], x=[sum(e.seconds for e in run.history) / len(run.history)
                                                      for run in runs],
                name=PER_EPOCH, orientation="h", marker_color=PER_EPOCH_COLOR, customdata=data,
                texttemplate="%{x:.1f} s", textposition="auto", cliponaxis=False,
                hovertemplate="%{customdata[0]}<br>%{x:.2f} s per epoch<br>(mean of %{customdata[1]} epochs)"
                              "<br>whole run: %{customdata[2]:.1f} s<extra></extra>")
    fig.add_bar(y=[labels[run.id] for run in runs], x=[one_off_seconds(run) for run in runs], name=ONE_OFF,
                orientation="h", marker_color=ONE_OFF_COLOR, customdata=data, texttemplate="%{x:.1f} s",
                textposition="auto", cliponaxis=False,
                hovertemplate="%{customdata[0]}<br>%{x:.2f} s once, before and between the epochs:<br>loading "
                              "pictures, caching features<br>whole run: %{customdata[2]:.1f} s<extra></extra>")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="seconds", rangemode="tozero")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return _layout(fig, "Time: per epoch and one-off", height=80 + 70 * max(len(runs), 1), hovermode="closest")


def parameters(runs: list[RunRecord], labels: dict[str, str], names: dict[str, str]) -> go.Figure:
    """Trainable parameters drawn over all parameters, one colour per series, the runs on the y axis by their short
    labels (their whole names on hover); a tick at each power of ten, so that no two tick labels meet."""
    y, hover = [labels[r.id] for r in runs], [names[r.id] for r in runs]
    fig = go.Figure()
    fig.add_bar(y=y, x=[r.total_params for r in runs], name="total", orientation="h", marker_color=TOTAL_COLOR,
                customdata=hover, hovertemplate="%{customdata}<br>%{x:,} parameters in all<extra></extra>")
    fig.add_bar(y=y, x=[r.trainable_params for r in runs], name="trainable", orientation="h",
                marker_color=TRAINABLE_COLOR, customdata=hover,
                hovertemplate="%{customdata}<br>%{x:,} trainable parameters<extra></extra>")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(type="log", title_text="parameters (log)", dtick=1, tickformat="~s")
    fig.update_yaxes(autorange="reversed", automargin=True)
    return _layout(fig, "Trainable against total parameters", height=80 + 50 * len(runs), hovermode="closest")


def confusion_matrix(run: RunRecord, label: str) -> go.Figure | None:
    """Counts of actual against predicted class on the validation set, each cell clickable (a square point on it
    carries [actual, predicted] as customdata: Plotly selects points, not heatmap cells); None when no predictions
    were saved."""
    if not run.val_predictions:
        return None
    names = run.class_names
    counts = run.val_predictions.confusion(len(names))
    fig = go.Figure(go.Heatmap(z=counts, x=names, y=names, text=counts, texttemplate="%{text}", colorscale="Blues",
                               showscale=False, hoverinfo="skip", zmin=0))
    cells = [(actual, predicted) for actual in range(len(names)) for predicted in range(len(names))]
    fig.add_scatter(
        x=[names[p] for _, p in cells], y=[names[a] for a, _ in cells], mode="markers", showlegend=False,
        customdata=[[a, p, counts[a][p]] for a, p in cells],
        marker=dict(symbol="square", size=max(12, min(60, 240 // len(names))), opacity=0.01, color="black"),
        selected=dict(marker=dict(opacity=0.2)), unselected=dict(marker=dict(opacity=0.01)),
        hovertemplate="actual %{y}, predicted %{x}: %{customdata[2]} picture(s)<br>click to see them<extra></extra>")
    fig.update_xaxes(title_text="predicted", type="category", fixedrange=True)
    fig.update_yaxes(title_text="actual", autorange="reversed", type="category", fixedrange=True)
    return _layout(fig, label, height=260, hovermode="closest")


CLASS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf"]


def feature_map(points, files: list[str], labels: list[int], predictions: list[int] | None, class_names: list[str],
                title: str) -> go.Figure:
    """Pictures as points in two dimensions, a colour per class; a model's mistakes as crosses. Each point carries its
    file as customdata: hover names it, a click selects it."""
    fig = go.Figure()
    for index, name in enumerate(class_names):
        for wrong in (False, True):
            rows = [row for row, label in enumerate(labels) if label == index
                    and (predictions is not None and predictions[row] != label) == wrong]
            if not rows:
                continue
            said = [f"predicted {class_names[predictions[row]]}" if predictions is not None else "" for row in rows]
            fig.add_scatter(
                x=[float(points[row, 0]) for row in rows], y=[float(points[row, 1]) for row in rows], mode="markers",
                name=f"{name}{' (mistakes)' if wrong else ''}", legendgroup=name,
                marker=dict(color=CLASS_COLORS[index % len(CLASS_COLORS)], size=11 if wrong else 7,
                            symbol="x" if wrong else "circle", line=dict(width=0)),
                customdata=[[files[row], text] for row, text in zip(rows, said)],
                hovertemplate=f"{name}: %{{customdata[0]}}<br>%{{customdata[1]}}<extra></extra>")
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    return _layout(fig, title, height=300, hovermode="closest")


def probabilities(prediction: Prediction, scenario: str) -> go.Figure:
    names = list(prediction.probabilities)
    values = list(prediction.probabilities.values())
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", text=[f"{v:.1%}" for v in values],
                           textposition="auto", marker_color=color_for(scenario)))
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    return _layout(fig, "", height=40 + 40 * len(names), hovermode="closest")



MOST_MISTAKES_AT_FIRST = 48  # a gallery's first look: every mistake up to this many


def first_look(pictures: list, mistakes: int) -> list:
    """What a gallery shows before "every picture" is asked for, of pictures with the mistakes first: every mistake
    (up to MOST_MISTAKES_AT_FIRST), or a page of pictures when there are none."""
    return pictures[:min(mistakes, MOST_MISTAKES_AT_FIRST) or GALLERY_PAGE]


def hidden_text(shown: int, mistakes: int, pictures: int) -> str:
    """What a gallery's first look leaves out, and the way to it."""
    if mistakes > shown:
        return (f"{shown} of the {mistakes} mistakes shown. Turn on 'Show every picture' above to page through all "
                f"{pictures} pictures, mistakes first.")
    what = "Every mistake is shown" if mistakes else "No mistakes: a first page is shown"
    return f"{what}; the other {pictures - shown} pictures are right. Turn on 'Show every picture' above to see them."


def pages(count: int, per_page: int | None = None) -> int:
    """How many gallery pages `count` pictures fill."""
    return max(-(-count // (per_page or GALLERY_PAGE)), 1)


def page_of(items: list, page: int, per_page: int | None = None) -> list:
    """The items on gallery page `page` (from 1)."""
    per_page = per_page or GALLERY_PAGE
    return items[(page - 1) * per_page:page * per_page]


def rate_curve(curve: RateCurve) -> go.Figure:
    """The learning-rate finder's smoothed loss against the rate (log x), with the suggested rate marked."""
    fig = go.Figure()
    fig.add_scatter(x=curve.rates, y=curve.losses, mode="lines", name="smoothed loss", line=dict(color=PER_EPOCH_COLOR),
                    hovertemplate="rate %{x:.2e}: loss %{y:.4f}<extra></extra>")
    nearest = min(range(len(curve.rates)), key=lambda i: abs(math.log(curve.rates[i] / curve.suggestion)))
    fig.add_scatter(x=[curve.suggestion], y=[curve.losses[nearest]], mode="markers", name="suggested",
                    marker=dict(color=ONE_OFF_COLOR, size=12, symbol="diamond"),
                    hovertemplate="suggested rate %{x:.2e}<extra></extra>")
    fig.update_xaxes(type="log", title_text="learning rate", exponentformat="power")
    fig.update_yaxes(title_text="loss (smoothed)")
    return _layout(fig, "Loss against the learning rate", hovermode="closest")


def layer_rates(runs: list[RunRecord], labels: dict[str, str]) -> go.Figure | None:
    """Each layer group's learning rate at the start of every epoch, run by run (log y); None when no run recorded
    them (runs saved before recipes had phases)."""
    fig, dashes = go.Figure(), ["solid", "dash", "dot", "dashdot"]
    recorded = [run for run in runs if any(epoch.rates for epoch in run.history)]
    for index, run in enumerate(recorded):
        groups = list(dict.fromkeys(name for epoch in run.history for name in (epoch.rates or {})))
        for number, group in enumerate(groups):
            epochs = [epoch for epoch in run.history if epoch.rates and group in epoch.rates]
            fig.add_scatter(x=[epoch.epoch for epoch in epochs], y=[epoch.rates[group] for epoch in epochs],
                            name=f"{labels[run.id]} · {group}", mode="lines+markers",
                            line=dict(color=color_for(run.scenario, index), dash=dashes[number % len(dashes)]),
                            hovertemplate="epoch %{x}: %{y:.2e}<extra>%{fullData.name}</extra>")
    if not recorded:
        return None
    fig.update_yaxes(type="log", title_text="learning rate", exponentformat="power")
    _epoch_axis(fig, max(len(run.history) for run in recorded))
    return _layout(fig, "Each layer group's rate at the start of each epoch")
