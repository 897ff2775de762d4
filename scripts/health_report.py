"""The tutorial data's health report, for docs/data-health.md: python -m scripts.health_report --out DIR.

Runs the health check (core.health, kept beside the runs, so a second call is instant) on hymenoptera_data (or
--data), prints what it finds, and draws it with Pillow: the class counts, the most similar pairs of pictures and
the label suspects, as thumbnails with their captions. With --compare ORIGINAL CLEANED it also prints, for each
scenario and size both experiments have, the mean accuracies over seeds and the paired difference (same seed, same
validation pictures) of an experiment trained without the excluded pictures against the original one.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from core.data import ensure_tutorial_data, load_dataset
from core.experiment import ExperimentPlan, accuracy_mean, compare_seeds, list_plans, read_plan, results, size_text
from core.health import NEAR_DUPLICATE, DuplicatePair, HealthReport, LabelIssue, check_health
from core.runs import accuracy_text, list_runs

THUMB = 220  # thumbnail side, pixels
CAPTION = 54  # caption height under each thumbnail or pair
MARGIN = 12
COLOURS = {"train": (31, 119, 180), "val": (255, 127, 14), "test": (44, 160, 44)}


def font(size: int = 14) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def thumbnail(path: Path, side: int = THUMB) -> Image.Image:
    """The picture, letterboxed into a square (not cropped: what is at the edges shows)."""
    with Image.open(path) as picture:
        picture = ImageOps.exif_transpose(picture).convert("RGB")
        picture.thumbnail((side, side))
    square = Image.new("RGB", (side, side), "white")
    square.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    return square


def _text_lines(draw: ImageDraw.ImageDraw, origin: tuple[int, int], lines: list[str], size: int = 13) -> None:
    x, y = origin
    for line in lines:
        draw.text((x, y), line, fill="black", font=font(size))
        y += size + 4


def short(file: str) -> str:
    """train/ants/1099452230_d1949d3250.jpg -> train/ants/1099452230_d19..."""
    split, name, stem = file.split("/", 2) if file.count("/") >= 2 else ("", "", file)
    return f"{split}/{name}/{stem if len(stem) <= 22 else stem[:19] + '...'}"


def pairs_figure(root: Path, pairs: list[DuplicatePair], title: str) -> Image.Image:
    """One row per pair: the two pictures side by side, their names, splits and similarity under them."""
    width = 2 * THUMB + 3 * MARGIN
    row = THUMB + CAPTION + MARGIN
    canvas = Image.new("RGB", (width, 34 + row * len(pairs)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 8), title, fill="black", font=font(15))
    for index, pair in enumerate(pairs):
        top = 34 + index * row
        for column, file in enumerate((pair.first, pair.second)):
            left = MARGIN + column * (THUMB + MARGIN)
            canvas.paste(thumbnail(root / file), (left, top))
            split = file.split("/")[0]
            draw.rectangle((left, top, left + THUMB - 1, top + THUMB - 1), outline=COLOURS.get(split, "grey"), width=3)
            _text_lines(draw, (left, top + THUMB + 4), [short(file)], 12)
        where = "across splits" if pair.across_splits else "same split"
        _text_lines(draw, (MARGIN, top + THUMB + 22), [f"similarity {pair.similarity:.3f} ({where})"], 13)
    return canvas


def suspects_figure(root: Path, issues: list[LabelIssue], title: str, columns: int = 4) -> Image.Image:
    """A grid of the label suspects, most suspect first: given -> suggested class and the label quality."""
    rows = max(1, -(-len(issues) // columns))
    width = columns * (THUMB + MARGIN) + MARGIN
    cell = THUMB + CAPTION + MARGIN
    canvas = Image.new("RGB", (width, 34 + rows * cell), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 8), title, fill="black", font=font(15))
    for index, issue in enumerate(issues):
        left = MARGIN + (index % columns) * (THUMB + MARGIN)
        top = 34 + (index // columns) * cell
        canvas.paste(thumbnail(root / issue.file), (left, top))
        split = issue.file.split("/")[0]
        draw.rectangle((left, top, left + THUMB - 1, top + THUMB - 1), outline=COLOURS.get(split, "grey"), width=3)
        flag = ", cleanlab: error" if issue.flagged else ""
        _text_lines(draw, (left, top + THUMB + 4), [f"{index + 1}. {short(issue.file)}",
                                                    f"{issue.given} -> {issue.suggested}, quality {issue.quality:.2f}"
                                                    f"{flag}"], 12)
    return canvas


def counts_figure(report: HealthReport) -> Image.Image:
    """Horizontal bars: pictures per class in each split."""
    bars = [(split, name, count) for split, per_class in report.counts.items() for name, count in per_class.items()]
    largest = max((count for *_, count in bars), default=1) or 1
    label_width, bar_width, height = 110, 360, 26
    canvas = Image.new("RGB", (label_width + bar_width + 70, 40 + height * len(bars)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 8), "Pictures per class and split", fill="black", font=font(15))
    for index, (split, name, count) in enumerate(bars):
        top = 38 + index * height
        draw.text((MARGIN, top + 3), f"{split}/{name}", fill="black", font=font(13))
        length = int(bar_width * count / largest)
        draw.rectangle((label_width, top + 2, label_width + length, top + height - 6), fill=COLOURS.get(split, "grey"))
        draw.text((label_width + length + 6, top + 3), str(count), fill="black", font=font(13))
    return canvas


def describe(report: HealthReport) -> None:
    print(f"Health of {report.data_dir}: {report.pictures} pictures, {report.backbone} ImageNet features, "
          f"{report.seconds:.1f} s when made")
    for split, per_class in report.counts.items():
        print(f"  {split}: " + ", ".join(f"{name} {count}" for name, count in per_class.items()))
    for warning in report.warnings:
        print(f"  warning: {warning}")
    print(f"exact duplicates: {len(report.exact_duplicates)}; near-duplicates (>= {NEAR_DUPLICATE}): "
          f"{report.near_duplicates_text()}")
    for pair in report.exact_duplicates + report.near_duplicates + report.most_similar:
        print(f"  {pair.similarity:.3f} {pair.first} = {pair.second}" + ("; across splits" * pair.across_splits))
    flagged = sum(issue.flagged for issue in report.label_issues)
    print(f"label suspects: {len(report.label_issues)}, of which cleanlab flags {flagged}")
    for issue in report.label_issues:
        print(f"  {issue.quality:.3f} {issue.file}: {issue.given} -> {issue.suggested}"
              + (" (cleanlab: likely error)" if issue.flagged else ""))
    if report.unavailable:
        print(report.unavailable)


def save(figure: Image.Image, path: Path) -> None:
    """As a 256-colour PNG: a quarter of the bytes of a full-colour one, and the thumbnails still read."""
    figure.quantize(256).save(path, optimize=True)


def draw(report: HealthReport, out: Path, most_suspects: int = 16) -> list[Path]:
    root = Path(report.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "counts.png"]
    save(counts_figure(report), written[-1])
    duplicates = report.exact_duplicates + report.near_duplicates
    if duplicates:
        written.append(out / "duplicates.png")
        save(pairs_figure(root, duplicates[:8], f"Duplicates (exact, or similarity >= {NEAR_DUPLICATE})"), written[-1])
    if report.most_similar:
        written.append(out / "most-similar.png")
        save(pairs_figure(root, report.most_similar, f"The most similar pairs below {NEAR_DUPLICATE} (not duplicates)"),
             written[-1])
    if report.label_issues:
        written.append(out / "label-suspects.png")
        save(suspects_figure(root, report.label_issues[:most_suspects], "Label suspects, most suspect first (blue "
                             "frame: train, orange: val)"), written[-1])
    return written


# ---------------------------------------------------------------- with and without the excluded pictures

def cleaned_plan(runs_dir: Path, name: str | None) -> ExperimentPlan:
    if name:
        return read_plan(name, runs_dir)
    plans = [plan for plan in list_plans(runs_dir) if plan.excluded]
    if len(plans) != 1:
        raise SystemExit(f"{runs_dir} holds {len(plans)} experiments with excluded pictures: name one "
                         "(--cleaned-name).")
    return plans[0]


def compare(original_dir: Path, original_name: str, cleaned_dir: Path, cleaned_name: str | None) -> None:
    """Per scenario and size of the cleaned experiment: both experiments' means over the seeds both have (95% t
    interval) and the paired difference, cleaned minus original, on the same validation pictures."""
    original = results(read_plan(original_name, original_dir), list_runs(original_dir).runs)
    cleaned = results(cleaned_plan(cleaned_dir, cleaned_name), list_runs(cleaned_dir).runs)
    print(f"\n{cleaned.plan.name} ({len(cleaned.plan.excluded)} pictures left out: "
          f"{', '.join(cleaned.plan.excluded)}) against {original.plan.name}")
    table = ["| scenario | pictures per class | seeds | best val acc, cleaned | best val acc, original | "
             "final val acc, cleaned | final val acc, original | paired difference, cleaned - original |",
             "|---|---|---|---|---|---|---|---|"]
    for row in cleaned.rows:
        a = {run.config.seed: run for run in cleaned.runs_of(row.scenario, row.pictures_per_class)}
        b = {run.config.seed: run for run in original.runs_of(row.scenario, row.pictures_per_class)}
        comparison = compare_seeds(a, b, "cleaned", "original", row.pictures_per_class)
        if comparison is None:
            continue
        seeds = sorted(a.keys() & b.keys())
        size = size_text(row.pictures_per_class)
        trained = [statistics.mean(runs[s].dataset.total("train") / len(runs[s].class_names) for s in seeds)
                   for runs in (a, b)]
        means = {name: [accuracy_mean([getattr(runs[s], name)().value for s in seeds]) for runs in (a, b)]
                 for name in ("best_val", "final_val")}
        difference, words = comparison.difference, comparison.text
        print(f"\n{row.scenario}, {size} per class, seeds {seeds} ({trained[0]:.1f} against {trained[1]:.1f} "
              "pictures per class trained on)")
        print(f"  best val (optimistic): cleaned {accuracy_text(means['best_val'][0])}, "
              f"original {accuracy_text(means['best_val'][1])}")
        print(f"  final val            : cleaned {accuracy_text(means['final_val'][0])}, "
              f"original {accuracy_text(means['final_val'][1])}")
        if row.pictures_per_class is not None:  # drawn from a shorter list: the same seed draws other pictures
            shared = [len(set(a[s].experiment.train_files or []) & set(b[s].experiment.train_files or []))
                      for s in seeds]
            dropped = [len(set(cleaned.plan.excluded) & set(b[s].experiment.train_files or [])) for s in seeds]
            print(f"  training pictures shared with the original run of the same seed: {shared} of "
                  f"{len(a[seeds[0]].class_names) * row.pictures_per_class}; excluded pictures that the original "
                  f"runs had drawn: {dropped}")
        print(f"  paired, kept weights: {words}")
        table.append(f"| {row.scenario} | {size} ({trained[0]:.1f} / {trained[1]:.1f}) | {len(seeds)} | "
                     + " | ".join(accuracy_text(means[name][i]) for name in ("best_val", "final_val") for i in (0, 1))
                     + f" | {100 * difference.value:+.1f} points [{100 * difference.low:.1f}, "
                       f"{100 * difference.high:.1f}] |")
    print("\n" + "\n".join(table))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.health_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a data set folder (default: the tutorial's hymenoptera_data)")
    parser.add_argument("--data-root", type=Path, help="folder holding hymenoptera_data (default: $STUDIO_DATA_ROOT)")
    parser.add_argument("--runs-dir", type=Path, help="where the health check is kept (default: $STUDIO_RUNS_DIR "
                        "or ./runs)")
    parser.add_argument("--weights", type=Path, help="weights file or folder (default: $STUDIO_WEIGHTS, ...)")
    parser.add_argument("--out", type=Path, help="folder for the PNG files (default: none drawn)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("ORIGINAL_RUNS_DIR", "CLEANED_RUNS_DIR"),
                        help="compare an experiment trained without the excluded pictures with the original")
    parser.add_argument("--original-name", default="hymenoptera-mobilenet_v2")
    parser.add_argument("--cleaned-name", help="(default: the one experiment of CLEANED_RUNS_DIR with exclusions)")
    args = parser.parse_args(argv)
    scan = load_dataset(args.data or ensure_tutorial_data(args.data_root, download=False))
    report = check_health(scan, args.runs_dir, args.weights)
    describe(report)
    if args.out:
        for path in draw(report, args.out):
            print(f"wrote {path}")
    if args.compare:
        compare(args.compare[0], args.original_name, args.compare[1], args.cleaned_name)


if __name__ == "__main__":
    main()
