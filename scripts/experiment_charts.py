"""An experiment's charts as pictures, for documents: python -m scripts.experiment_charts --name NAME --out DIR.

The same Plotly figures as the Experiments page (dashboard.charts), drawn by headless Chromium (Debian's
`chromium`, as the browser test uses) from a self-contained HTML file: no network, no extra package.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from core.experiment import read_plan, results, size_text
from core.runs import list_runs
from dashboard import charts

METRICS = {"best_val": "best", "final_val": "final"}


def save_picture(figure, path: Path, width: int = 900) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Debian's chromium is needed to draw the pictures (apt-get install chromium).")
    figure.update_layout(width=width, paper_bgcolor="white", plot_bgcolor="white")
    figure.update_xaxes(gridcolor="#e5e5e5")
    figure.update_yaxes(gridcolor="#e5e5e5")
    with tempfile.TemporaryDirectory() as work, sync_playwright() as playwright:
        page_file = Path(work) / "figure.html"
        figure.write_html(page_file, include_plotlyjs=True, full_html=True, config={"displayModeBar": False})
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": width + 20, "height": int(figure.layout.height or 500) + 20})
        page.goto(page_file.as_uri())
        page.wait_for_selector(".main-svg")
        page.locator(".plotly-graph-div").screenshot(path=str(path))
        browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.experiment_charts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the experiment's name")
    parser.add_argument("--runs-dir", type=Path, help="(default: $STUDIO_RUNS_DIR or ./runs)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--curves-at", default="all", help="pictures per class of the learning curves and the "
                        "backbones' trade-offs (default: all)")
    args = parser.parse_args(argv)
    outcome = results(read_plan(args.name, args.runs_dir), list_runs(args.runs_dir).runs)
    args.out.mkdir(parents=True, exist_ok=True)
    for metric, name in METRICS.items():
        figure = charts.accuracy_by_size(outcome, metric)
        save_picture(figure, args.out / f"accuracy-by-size-{name}.png")
    size = None if args.curves_at == "all" else int(args.curves_at)
    groups = {f"{arm} ({len(runs)} seeds)": runs for arm in outcome.arms() if (runs := outcome.runs_of(arm, size))}
    save_picture(charts.curves_with_bands(groups, "val_acc", f"Validation accuracy per epoch, {size_text(size)} "
                                                             "pictures per class"), args.out / "learning-curves.png")
    if outcome.plan.several_backbones:  # the backbones' trade-offs, as the Experiments page draws them
        for cost in charts.TRADE_OFF_COSTS:
            save_picture(charts.trade_off(outcome, size, cost), args.out / f"trade-off-{cost}.png")
    print(f"Wrote the charts of {outcome.plan.name} ({outcome.done} cells) into {args.out}")


if __name__ == "__main__":
    main()
