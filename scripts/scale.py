"""The scale benchmark: what the studio costs on thousands of pictures, as a practitioner's own photos would be.

    python -m scripts.scale [--sizes 400 2000 10000] [--steps health frozen finetune experiment render]

For each N it generates a variant set of N training pictures (and N/4 validation pictures) from the tutorial's:
random crops, flips, rotations and colour jitter, saved as JPEG of quality 60-95 with the longer side 300-1,200 px.
Then it runs each step as a user would, in a process of its own (the command line, or the dashboard's pages through
Streamlit's AppTest), and prints its wall time, CPU time per picture (every thread and loader process included) and
peak memory (RSS of the process and the processes it waited for):

- health: `python -m core data --health`;
- frozen: `python -m core train --scenario frozen --epochs 3`, with the time its progress bar first showed as left,
  against the time that was actually left, and its feature caching's forward passes per second;
- finetune: `python -m core train --scenario finetune --epochs 1`;
- experiment: `python -m core experiment` (frozen, seeds 0 and 1, 3 epochs): its estimate against its wall time;
- render: the first render of the Compare and Mistakes pages on the saved runs.

It also measures the compute floor (MobileNetV2's forward passes per second, as feature caching runs them: BatchNorm
folded, channels-last) and the near-duplicate search on 50,000 synthetic feature vectors. Results are in
docs/performance.md, "At scale". Uses the MobileNetV2 weights of $STUDIO_WEIGHTS and the tutorial's data of
$STUDIO_DATA_ROOT (or --data-root).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BACKBONE = "mobilenet_v2"
STEPS = ("health", "frozen", "finetune", "experiment", "render")
SYNTHETIC_VECTORS = 50_000


@dataclass
class Measured:
    wall: float
    cpu: float
    peak_rss_gb: float
    out: str
    err: str


def measure(command: list[str], env: dict[str, str]) -> Measured:
    """Run `command` in a process of its own: its wall time, CPU time and peak RSS (with the processes it waited for:
    loader workers)."""
    started = time.perf_counter()
    with open(os.devnull, "rb") as nothing:
        process = subprocess.Popen(command, cwd=PROJECT, env=env, stdin=nothing, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        out, err = process.communicate()
    # communicate() reaped the child: its resources are added to RUSAGE_CHILDREN
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - measure.cpu_so_far
    measure.cpu_so_far = usage.ru_utime + usage.ru_stime
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
    return Measured(time.perf_counter() - started, cpu, _peak_rss(err), out, err)


measure.cpu_so_far = 0.0


def _peak_rss(err: str) -> float:
    found = re.findall(r"PEAK_RSS_KB=(\d+)", err)
    return int(found[-1]) / 2**20 if found else float("nan")


# ---------------------------------------------------------------- the variant sets

def _variant(job: tuple[str, str, int]) -> None:
    from PIL import Image, ImageEnhance, ImageOps

    source, target, seed = job
    rng = random.Random(seed)
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = image.size
    scale = rng.uniform(0.7, 1.0) ** 0.5
    w, h = int(width * scale), int(height * scale)
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    image = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = image.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(rng.uniform(0.7, 1.3))
    longer = rng.randint(300, 1200)
    factor = longer / max(image.size)
    image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.BICUBIC)
    image.save(target, quality=rng.randint(60, 95))


def variant_set(tutorial: Path, folder: Path, train: int) -> Path:
    """`train` training and `train // 4` validation variants of the tutorial's pictures, made once."""
    done = folder / "made.json"
    if done.exists():
        return folder
    jobs = []
    for split, count in (("train", train), ("val", max(train // 4, 8))):
        classes = sorted(p.name for p in (tutorial / split).iterdir() if p.is_dir())
        for label in classes:
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            sources = sorted((tutorial / split / label).glob("*.jpg"))
            share = count // len(classes)
            jobs += [(str(sources[i % len(sources)]), str(folder / split / label / f"v{i:05d}.jpg"),
                      zlib.crc32(f'{split}/{label}/{i}'.encode())) for i in range(share)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_variant, jobs, chunksize=32))
    done.write_text(json.dumps({"train": train, "pictures": len(jobs)}))
    return folder


# ---------------------------------------------------------------- the steps

def core_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "scripts.scale", "--child", "core", *arguments]


def run_child(argv: list[str]) -> None:
    """In the child: run the command line or the page renders, then print the peak RSS (with waited-for children)."""
    import atexit

    def report() -> None:
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(f"PEAK_RSS_KB={peak}", file=sys.stderr)

    atexit.register(report)
    if argv[0] == "core":
        from core.cli import main
        code = main(argv[1:])
        report()
        os._exit(code or 0)
    if argv[0] == "render":
        render_pages()
    if argv[0] == "near-duplicates":
        near_duplicates()


def render_pages() -> None:
    from streamlit.testing.v1 import AppTest

    for page in ("pages/2_Compare.py", "pages/6_Mistakes.py"):
        started = time.perf_counter()
        app = AppTest.from_file(str(PROJECT / page), default_timeout=1800).run()
        if app.exception:
            raise SystemExit(f"{page}: {[e.value for e in app.exception]}")
        print(f"RENDER {page} {time.perf_counter() - started:.1f}")


def near_duplicates() -> None:
    import numpy as np

    from core.health import similar_pairs

    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(SYNTHETIC_VECTORS, 1280)).astype(np.float32))  # pooled ReLU features are >= 0
    planted = features[0::1000] + rng.normal(scale=0.05, size=features[0::1000].shape).astype(np.float32)
    features[1::1000] = planted
    started = time.perf_counter()
    found = similar_pairs([f"train/x/{i}.jpg" for i in range(len(features))], features, [])
    print(f"NEAR {time.perf_counter() - started:.1f} {found.count} {len(found.near)}")


def compute_floor(weights: str, seconds: float = 20.0) -> float:
    """MobileNetV2's forward passes per second as feature caching runs them, on random pictures."""
    import torch

    from core.device import Compute, forward_batch_size
    from core.folding import FoldedEvaluation
    from core.models import build_model

    built = build_model(BACKBONE, "frozen", 2, weights)
    compute = Compute.fastest(torch.device("cpu"))
    model = FoldedEvaluation(compute.place(built.model))()
    batch = torch.randint(0, 256, (forward_batch_size(compute.device), 3, 224, 224), dtype=torch.uint8)
    list(compute.outputs(model, [(batch, None)]))  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        list(compute.outputs(model, [(batch, None)]))
        done += len(batch)
    return done / (time.perf_counter() - started)


def first_time_left(err: str) -> tuple[float, float] | None:
    """(seconds the progress bar first showed as left, seconds that were left then), from the bar's frames."""
    def seconds(text: str) -> float:
        total = 0
        for part in text.split(":"):
            total = total * 60 + int(part)
        return total

    frames = re.findall(r"\[(\d+(?::\d+)+), [^\]]*?(\d+(?::\d+)+) left\]", err)
    elapsed = re.findall(r"\[(\d+(?::\d+)+), ", err)
    if not frames or not elapsed:
        return None
    return seconds(frames[0][1]), seconds(elapsed[-1]) - seconds(frames[0][0])


def features_rate(runs: Path, scenario: str) -> tuple[float, int]:
    """(forward passes per second while the frozen run cached its features, forward passes) of the newest run."""
    newest = max((p for p in runs.glob("*/run.json") if json.loads(p.read_text())["config"]["scenario"] == scenario),
                 key=lambda p: p.stat().st_mtime)
    run = json.loads(newest.read_text())
    counts = {split: sum(per_class.values()) for split, per_class in run["dataset"]["counts"].items()}
    passes = run["config"]["cached_views"] * counts["train"] + sum(n for s, n in counts.items() if s != "train")
    seconds = run["seconds"] - sum(epoch["seconds"] for epoch in run["history"])
    return passes / seconds, passes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 2000, 10000])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/studio-scale"), help="where the sets and runs go")
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("STUDIO_DATA_ROOT", "data")))
    parser.add_argument("--weights", default=os.environ.get("STUDIO_WEIGHTS"))
    parser.add_argument("--no-floor", action="store_true", help="skip the compute floor and the near-duplicates")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child)
        return 0
    tutorial = args.data_root / "hymenoptera_data"
    rows = []
    if not args.no_floor:
        floor = compute_floor(args.weights)
        print(f"compute floor: {floor:.1f} MobileNetV2 forward passes per second (batch as feature caching runs it)")
        near = measure([sys.executable, "-m", "scripts.scale", "--child", "near-duplicates"], dict(os.environ))
        wall, count, listed = re.search(r"NEAR (\S+) (\d+) (\d+)", near.out).groups()
        print(f"near-duplicates at {SYNTHETIC_VECTORS:,} vectors: {wall} s, {count} pairs counted ({listed} listed), "
              f"peak RSS {near.peak_rss_gb:.2f} GB")
    else:
        floor = None
    for size in args.sizes:
        data = variant_set(tutorial, args.work / f"set-{size}", size)
        runs = args.work / f"runs-{size}"
        env = {**os.environ, "STUDIO_RUNS_DIR": str(runs), "STUDIO_DATA_ROOT": str(args.data_root)}
        pictures = sum(1 for _ in data.glob("*/*/*.jpg"))
        common = ["--data", str(data), "--runs-dir", str(runs), "--backbone", BACKBONE, "--weights", args.weights,
                  "--device", "cpu"]
        print(f"\nN = {size}: {pictures} pictures in {data}")
        for step in args.steps:
            note = ""
            if step == "health":
                measured = measure(core_command("data", "--health", *common), env)
            elif step in ("frozen", "finetune"):
                epochs = "3" if step == "frozen" else "1"
                measured = measure(core_command("train", "--scenario", step, "--epochs", epochs, *common), env)
                told = first_time_left(measured.err)
                if told:
                    note = f"first time left {told[0]:.0f} s, truly {told[1]:.0f} s ({told[0] / told[1] - 1:+.0%})"
                if step == "frozen":
                    rate, passes = features_rate(runs, "frozen")
                    note += (f"; features {passes} passes at {rate:.1f}/s"
                             + (f" = {rate / floor:.0%} of the floor" if floor else ""))
            elif step == "experiment":
                measured = measure(core_command("experiment", "--scenario", "frozen", "--seeds", "0", "1", "--sizes",
                                                "all", "--epochs", "3", "--name", f"scale-{time.time():.0f}",
                                                *common), env)
                value, unit = re.search(r"about ([\d.]+) (min|s)", measured.out).groups()
                estimate = float(value) * (60 if unit == "min" else 1)
                note = f"estimate {estimate:.0f} s, took {measured.wall:.0f} s ({estimate / measured.wall - 1:+.0%})"
            else:
                measured = measure([sys.executable, "-m", "scripts.scale", "--child", "render"], env)
                note = "; ".join(f"{Path(page).stem} {seconds} s"
                                 for page, seconds in re.findall(r"RENDER (\S+) (\S+)", measured.out))
            per_picture = measured.cpu / pictures
            rows.append((size, step, measured.wall, per_picture, measured.peak_rss_gb, note))
            print(f"  {step:<10} {measured.wall:7.1f} s wall  {per_picture * 1000:7.1f} ms CPU/picture  "
                  f"{measured.peak_rss_gb:5.2f} GB peak  {note}", flush=True)
    print("\n| N | step | wall | CPU per picture | peak RSS | notes |\n|---|---|---|---|---|---|")
    for size, step, wall, per_picture, peak, note in rows:
        print(f"| {size:,} | {step} | {wall:.1f} s | {per_picture * 1000:.1f} ms | {peak:.2f} GB | {note} |")
    for step in args.steps:
        by_size = {size: per for size, s, _, per, _, _ in rows if s == step}
        if len(by_size) > 1:
            sizes = sorted(by_size)
            print(f"{step}: CPU per picture at {sizes[-1]:,} / at {sizes[0]:,} = "
                  f"{by_size[sizes[-1]] / by_size[sizes[0]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
