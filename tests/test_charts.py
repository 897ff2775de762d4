"""The Compare and Train pages' Plotly figures (dashboard/charts.py), read as figure objects: where legends and
titles sit, which colours legends show, how epoch axes tick, what the time chart counts, and runs with no epoch."""
import pytest

from core.models import WeightsSource
from core.predict import Prediction
from core.runs import DatasetSummary, Predictions, RunRecord
from core.train import EpochStats, TrainConfig
from dashboard import charts


def make_run(run_id: str = "20240101-000000-frozen-resnet18-aaaa", scenario: str = "frozen", epochs: int = 3,
             epoch_seconds: float = 0.5, seconds: float = 19.3) -> RunRecord:
    """A run as a saved one reads, with `epochs` epochs of `epoch_seconds` each and `seconds` in all."""
    history = [EpochStats(epoch, 0.7 - epoch / 100, 0.6 + epoch / 100, 0.6, 0.7, epoch_seconds, 0.001)
               for epoch in range(1, epochs + 1)]
    return RunRecord(
        id=run_id, created="2024-01-01T00:00:00+00:00", status="completed" if history else "cancelled",
        config=TrainConfig(backbone="resnet18", scenario=scenario, epochs=max(epochs, 1)),
        class_names=["ants", "bees"], dataset=DatasetSummary("/data/hymenoptera_data", {}), history=history,
        best_epoch=min(2, epochs) if history else None, best_val_acc=0.7 if history else 0.0,
        trainable_params=1_026 if scenario == "frozen" else 11_177_538, total_params=11_177_538,
        weights_source=WeightsSource("none"), device="cpu", seconds=seconds,
        val_predictions=Predictions(["a.jpg", "b.jpg", "c.jpg"], [0, 1, 1], [0, 0, 1]) if history else None)


FROZEN = make_run()
FINETUNE = make_run("20240101-000000-finetune-resnet18-bbbb", "finetune", epoch_seconds=4.0, seconds=13.0)
UNTRAINED = make_run("20240101-000000-frozen-resnet18-cccc", epochs=0, seconds=12.0)
LABELS = {FROZEN.id: "frozen · resnet18", FINETUNE.id: "finetune · resnet18", UNTRAINED.id: "frozen (cancelled)"}
NAMES = {run_id: f"{label} · hymenoptera_data · 2024-01-01 00:00" for run_id, label in LABELS.items()}
RUNS = [FROZEN, FINETUNE]


def figures(runs=RUNS):
    """Every figure function of charts.py, by name, on `runs`."""
    series = {run.scenario: run.history for run in runs}
    prediction = Prediction({"ants": 0.8, "bees": 0.2})
    return {
        "live_history": charts.live_history(series),
        "overlay": charts.overlay(runs, "val_acc", "Validation accuracy", LABELS),
        "train_against_val": charts.train_against_val(runs[0], LABELS[runs[0].id]),
        "seconds_per_epoch": charts.seconds_per_epoch(runs, LABELS, NAMES),
        "parameters": charts.parameters(runs, LABELS, NAMES),
        "confusion_matrix": charts.confusion_matrix(runs[0], LABELS[runs[0].id]),
        "probabilities": charts.probabilities(prediction, "frozen"),
    }


def has_legend(figure) -> bool:
    return figure.layout.showlegend is not False and any(trace.showlegend is not False and trace.name
                                                          for trace in figure.data)


# ---------------------------------------------------------------- 1. legends clear of the axis titles

@pytest.mark.parametrize("name", ["live_history", "overlay", "train_against_val", "seconds_per_epoch", "parameters"])
def test_legends_sit_above_the_plot_area_clear_of_the_axis_titles(name):
    figure = figures()[name]
    assert has_legend(figure)
    legend = figure.layout.legend
    assert legend.orientation == "h" and legend.yanchor == "bottom" and legend.y >= 1, legend
    title = charts.TITLE_ROOM if figure.layout.title.text else 0
    assert figure.layout.margin.t >= charts.TOOLBAR_ROOM + title + charts.LEGEND_ROOM
    # nothing else is placed in the legend's band above the plot area: subplot titles became axis titles
    above = [a.text for a in figure.layout.annotations if a.yref == "paper" and a.y >= 1]
    assert above == []


def test_the_subplots_name_their_quantities_on_the_y_axes():
    for figure in (figures()["live_history"], figures()["train_against_val"]):
        assert (figure.layout.yaxis.title.text, figure.layout.yaxis2.title.text) == ("loss", "accuracy")


# ---------------------------------------------------------------- 2. legend colours are the bars' colours

@pytest.mark.parametrize("name", ["parameters", "seconds_per_epoch"])
def test_every_bar_series_has_one_colour_its_legend_shows(name):
    bars = [trace for trace in figures()[name].data if trace.type == "bar"]
    assert len(bars) == 2
    colors = [trace.marker.color for trace in bars]
    assert all(isinstance(color, str) for color in colors), colors  # a list would colour bars unlike the legend
    assert len(set(colors)) == len(bars)  # the series are told apart
    assert all(trace.showlegend is not False and trace.name for trace in bars)


def test_the_parameters_chart_keeps_the_runs_apart_on_its_axis():
    figure = figures()["parameters"]
    assert [list(trace.y) for trace in figure.data] == [[LABELS[r.id] for r in RUNS]] * 2
    assert figure.layout.xaxis.type == "log" and figure.layout.yaxis.autorange == "reversed"


# ---------------------------------------------------------------- 3. integer epoch ticks

@pytest.mark.parametrize("name", ["live_history", "overlay", "train_against_val"])
def test_epoch_axes_tick_at_whole_epochs_on_a_three_epoch_run(name):
    figure = figures()[name]
    axes = list(figure.select_xaxes())
    assert axes and all(axis.title.text == "epoch" for axis in axes)
    for axis in axes:
        assert axis.tickmode == "linear" and axis.tickformat == "d"
        assert isinstance(axis.dtick, int) and axis.dtick == 1
        assert isinstance(axis.tick0, int) and axis.tick0 == 1
        low, high = axis.range
        assert 0 < low < 1 and 3 < high < 4  # no tick at epoch 0 or 4


def test_a_long_run_ticks_at_a_whole_number_of_epochs_at_most_ten_times():
    long_run = make_run(epochs=40)
    axis = charts.overlay([long_run], "val_acc", "Validation accuracy", LABELS).layout.xaxis
    assert isinstance(axis.dtick, int) and axis.dtick > 1 and 40 / axis.dtick <= 10
    assert isinstance(axis.tick0, int) and axis.tickformat == "d"


# ---------------------------------------------------------------- 4. one-off time apart from the epochs

def test_the_time_chart_shows_the_one_off_time_apart_from_the_mean_epoch():
    figure = charts.seconds_per_epoch(RUNS, LABELS, NAMES)
    by_name = {trace.name: trace for trace in figure.data}
    assert set(by_name) == {charts.PER_EPOCH, charts.ONE_OFF}
    assert charts.PER_EPOCH == "per epoch (mean of epochs)"
    assert charts.ONE_OFF == "one-off: loading, feature caching"
    per_epoch, one_off = by_name[charts.PER_EPOCH], by_name[charts.ONE_OFF]
    assert list(per_epoch.y) == list(one_off.y) == [LABELS[FROZEN.id], LABELS[FINETUNE.id]]
    assert list(per_epoch.x) == pytest.approx([0.5, 4.0])
    assert list(one_off.x) == pytest.approx([19.3 - 1.5, 13.0 - 12.0])
    assert charts.one_off_seconds(FROZEN) == pytest.approx(17.8)
    assert "one-off" in figure.layout.title.text and "per epoch" in figure.layout.title.text
    assert figure.layout.xaxis.title.text == "seconds"
    # the hover says what each number counts and what the run took in all
    assert "mean of %{customdata[1]} epochs" in per_epoch.hovertemplate
    assert "whole run: %{customdata[2]" in per_epoch.hovertemplate
    assert [tuple(row) for row in per_epoch.customdata] == [(NAMES[FROZEN.id], 3, 19.3), (NAMES[FINETUNE.id], 3, 13.0)]
    assert "before and between the epochs" in one_off.hovertemplate


@pytest.mark.parametrize("name", ["parameters", "seconds_per_epoch"])
def test_bar_charts_name_runs_short_on_the_axis_and_whole_on_hover(name):
    """On a phone the whole names took the chart's width and left the bars about 60 px."""
    for trace in figures()[name].data:
        assert list(trace.y) == [LABELS[run.id] for run in RUNS]
        assert trace.hovertemplate.startswith("%{customdata") and NAMES[RUNS[0].id] in str(trace.customdata[0])


def test_the_parameters_axis_ticks_once_a_power_of_ten_with_short_numbers():
    """Plotly's own log ticks (1, 2, 5 in each decade) overlapped, and "parameters (log scale)" was cut."""
    axis = figures()["parameters"].layout.xaxis
    assert (axis.dtick, axis.tickformat, axis.title.text) == (1, "~s", "parameters (log)")


def test_the_live_chart_draws_train_paler_than_val():
    figure = figures()["live_history"]
    colors = {trace.name: trace.line.color for trace in figure.data}
    for scenario in ("frozen", "finetune"):
        assert colors[f"{scenario} train"] != colors[f"{scenario} val"]
        assert colors[f"{scenario} train"] == charts._rgba(colors[f"{scenario} val"], charts.TRAIN_ALPHA)


def test_a_gallerys_first_look_shows_every_mistake_and_says_what_it_leaves_out():
    pictures = list(range(153))  # mistakes first: 16 of them
    assert charts.first_look(pictures, 16) == list(range(16))
    assert charts.first_look(pictures, 0) == list(range(charts.GALLERY_PAGE))
    assert len(charts.first_look(pictures, 100)) == charts.MOST_MISTAKES_AT_FIRST
    assert charts.hidden_text(16, 16, 153).startswith("Every mistake is shown; the other 137 pictures are right")
    assert charts.hidden_text(48, 100, 153).startswith("48 of the 100 mistakes shown")


def test_the_one_off_time_is_never_negative():
    assert charts.one_off_seconds(make_run(epoch_seconds=2.0, seconds=5.99)) == 0.0


# ---------------------------------------------------------------- 5. a run with no finished epoch

def test_a_run_with_no_finished_epoch_has_no_history_chart_and_no_confusion_matrix():
    assert not UNTRAINED.trained
    assert charts.train_against_val(UNTRAINED, "x") is None
    assert charts.confusion_matrix(UNTRAINED, "x") is None
    assert charts.NOTHING_TO_CHART == "no epoch finished: nothing to chart"


def test_the_overlays_leave_out_a_run_with_no_finished_epoch():
    runs = [FROZEN, UNTRAINED, FINETUNE]
    assert charts.charted(runs) == [FROZEN, FINETUNE]
    assert [t.name for t in charts.overlay(runs, "val_loss", "Validation loss", LABELS).data] == [
        LABELS[FROZEN.id], LABELS[FINETUNE.id]]
    assert list(charts.seconds_per_epoch(runs, LABELS, NAMES).data[0].y) == [LABELS[FROZEN.id], LABELS[FINETUNE.id]]


# ---------------------------------------------------------------- 6. titles clear of the toolbar

@pytest.mark.parametrize("name", list(figures()))
def test_titles_sit_top_left_with_room_above_the_plot_for_the_toolbar(name):
    figure = figures()[name]
    title = figure.layout.title
    assert title.x == 0 and title.xanchor == "left"  # Plotly's toolbar sits top right
    assert title.yref == "container" and title.yanchor == "top" and title.y == 1
    assert title.pad.t >= charts.TOOLBAR_ROOM >= 30  # the title starts below the toolbar's row
    assert figure.layout.margin.t >= charts.TOOLBAR_ROOM + (charts.TITLE_ROOM if title.text else 0)


def test_the_toolbar_shows_on_hover_only_with_the_buttons_that_matter():
    assert charts.PLOTLY_CONFIG["displayModeBar"] == "hover"
    assert charts.PLOTLY_CONFIG["displaylogo"] is False
    assert {"lasso2d", "select2d"} <= set(charts.PLOTLY_CONFIG["modeBarButtonsToRemove"])


def test_accuracy_by_size_joins_sizes_that_a_small_data_set_trains_on_the_same_pictures():
    from core.experiment import ExperimentResults, SizeResult
    from core.stats import Estimate

    def row(size, pictures):
        mean = Estimate(0.9, 0.8, 1.0, 2)
        return SizeResult("frozen", size, pictures, [0, 1], mean, mean, None)

    outcome = ExperimentResults(plan=None, runs={}, rows=[row(1, 1.0), row(10, 8.0), row(25, 8.0), row(None, 8.0)],
                                comparisons=[])
    axis = charts.accuracy_by_size(outcome).layout.xaxis  # classes of 8 pictures: 10, 25 and all are the same 8
    assert list(axis.tickvals) == [1.0, 8.0] and list(axis.ticktext) == ["1", "10 / 25 / all (8)"]
