"""Data health: what is wrong with a data set before any model is blamed.

- counts per split and class, with warnings for imbalance and for too few pictures;
- exact duplicates (the same bytes) and near-duplicates (an untouched ImageNet backbone sees nearly the same
  picture: cosine similarity of its features), within a split and across splits (a training picture that leaks
  into validation makes validation accuracy a memory test);
- likely label errors: cleanlab's `find_label_issues` on out-of-fold probabilities of a logistic regression
  (scikit-learn) trained on the ImageNet features of every picture; with them, as suspects to look at, the pictures
  that this classifier puts in another class than their folder's.

The check is computed once per data set and backbone, and kept beside the runs (core.runs.dataset_dir) until a
picture is added, removed or changed.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import staging
from core.config import TrainConfig
from core.data import DatasetScan
from core.errors import WeightsError
from core.features import PictureOutputs, fingerprint, imagenet_outputs
from core.models import local_backbones
from core.parallel import in_order
from core.runs import dataset_dir

HEALTH_FORMAT = 2
IMBALANCE = 3.0  # a split's largest class more than this many times its smallest is warned
FEW_PICTURES = {"train": 10, "val": 5}  # fewer pictures of a class in the split than this is warned
# Cosine similarity of ImageNet features from which two pictures are near-duplicates. Measured with MobileNetV2 on
# hymenoptera_data: copies resized and cropped by 5% score 0.95 to 0.96, by 10 to 15% 0.89 to 0.94; the most similar
# two distinct photos (one ant, shot twice in a row) 0.886 (docs/data-health.md).
NEAR_DUPLICATE = 0.92
MOST_PAIRS = 200  # near-duplicate pairs listed, the most similar first (all are counted)
MOST_SIMILAR = 6  # the most similar pairs below NEAR_DUPLICATE, shown for a look
FOLDS = 5  # out-of-fold probabilities for the label check; fewer when a class has fewer pictures

Progress = Callable[[str, int, int], None]  # (phase, done, total): "reading", "features", "labels"


@dataclass(frozen=True)
class DuplicatePair:
    first: str  # relative to the data set's folder, e.g. "train/ants/1.jpg"
    second: str
    similarity: float  # 1.0 for exact duplicates

    @property
    def splits(self) -> tuple[str, str]:
        return self.first.split("/")[0], self.second.split("/")[0]

    @property
    def across_splits(self) -> bool:
        return self.splits[0] != self.splits[1]

    @property
    def classes_differ(self) -> bool:
        return self.first.split("/")[1] != self.second.split("/")[1]


@dataclass(frozen=True)
class LabelIssue:
    file: str
    given: str  # the class its folder says
    suggested: str  # the class the out-of-fold classifier finds most likely
    quality: float  # cleanlab's label quality (self-confidence): the probability of the given class, low is suspect
    flagged: bool  # cleanlab finds it a likely label error; else a suspect: the classifier suggests another class


@dataclass
class HealthReport:
    data_dir: str
    fingerprint: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    warnings: list[str]
    exact_duplicates: list[DuplicatePair]
    near_duplicates: list[DuplicatePair]
    label_issues: list[LabelIssue]  # most suspect first
    backbone: str | None  # whose ImageNet features; None when no weights could be had
    most_similar: list[DuplicatePair] = field(default_factory=list)  # below NEAR_DUPLICATE: not duplicates
    near_duplicate_pairs: int = 0  # all of them: `near_duplicates` holds the MOST_PAIRS most similar
    unavailable: str = ""  # why near-duplicates and label issues were not checked
    pictures: int = 0
    seconds: float = 0.0
    format: int = HEALTH_FORMAT

    @property
    def flagged(self) -> list[str]:
        """Every picture the check points at, each once: both of each duplicate pair, and the label suspects."""
        files = [file for pair in self.exact_duplicates + self.near_duplicates for file in (pair.first, pair.second)]
        return list(dict.fromkeys(files + [issue.file for issue in self.label_issues]))

    def near_duplicates_text(self) -> str:
        """How many near-duplicate pairs there are, all counted, and which of them are listed."""
        return pairs_text(max(self.near_duplicate_pairs, len(self.near_duplicates)), self.near_duplicates)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HealthReport:
        data = dict(data)
        for name in ("exact_duplicates", "near_duplicates", "most_similar"):
            data[name] = [DuplicatePair(**pair) for pair in data[name]]
        data["label_issues"] = [LabelIssue(**issue) for issue in data["label_issues"]]
        return cls(**data)


def pairs_text(count: int, listed: list[DuplicatePair]) -> str:
    """"3 pairs, 1 across splits", or, when fewer are listed than counted, which are."""
    across = sum(pair.across_splits for pair in listed)
    text = f"{count:,} pair{'' if count == 1 else 's'}"
    if count > len(listed):
        return text + f"; the {len(listed)} most similar are listed, {across} of them across splits"
    return text + f", {across} across splits"


def count_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """Imbalance (the largest class more than IMBALANCE times the smallest) and too few pictures, per split."""
    warnings = []
    for split, per_class in counts.items():
        if not per_class:
            continue
        largest, smallest = max(per_class, key=per_class.get), min(per_class, key=per_class.get)
        if per_class[smallest] and per_class[largest] > IMBALANCE * per_class[smallest]:
            warnings.append(f"{split}/ is imbalanced: {largest} has {per_class[largest]} pictures, "
                            f"{per_class[largest] / per_class[smallest]:.1f} times the {per_class[smallest]} of "
                            f"{smallest}. Accuracy then says little: look at each class's recall, or add pictures "
                            f"of {smallest}.")
        few = [f"{name} ({n})" for name, n in per_class.items() if split in FEW_PICTURES and n < FEW_PICTURES[split]]
        if few:
            warnings.append(f"{split}/ has fewer than {FEW_PICTURES[split]} pictures of {', '.join(few)}: "
                            + ("too few to learn from; the frozen scenario copes best." if split == "train" else
                               "too few to measure accuracy; every picture moves it by several points."))
    return warnings


def exact_duplicates(root: Path, files: list[str], progress: Progress | None = None) -> list[DuplicatePair]:
    """Pictures with the same bytes: each one after the first of its group, paired with the first."""
    def digest(file: str) -> str | None:
        try:
            return hashlib.sha256((Path(root) / file).read_bytes()).hexdigest()
        except OSError:
            return None

    groups: dict[str, list[str]] = defaultdict(list)
    for done, (file, found) in enumerate(zip(files, in_order(digest, files)), start=1):
        if found:
            groups[found].append(file)
        if progress:
            progress("reading", done, len(files))
    return [DuplicatePair(group[0], other, 1.0) for group in groups.values() for other in group[1:]]


@dataclass(frozen=True)
class SimilarPairs:
    near: list[DuplicatePair]  # the MOST_PAIRS most similar pairs at or above the threshold, the most similar first
    count: int  # every pair at or above the threshold, shown or not
    others: list[DuplicatePair]  # the MOST_SIMILAR most similar pairs below it


def similar_pairs(files: list[str], features: np.ndarray, exact: list[DuplicatePair],
                  threshold: float = NEAR_DUPLICATE, block: int = 512) -> SimilarPairs:
    """Pairs of pictures whose feature vectors have a cosine similarity of at least `threshold`: how many there are,
    and the most similar of them and of those below. Exact duplicates are left out (they are listed as such).

    Each pair is compared once, `block` pictures against those after them at a time (one matrix product each): the
    time grows with the square of the pictures, the memory with `block` times the pictures."""
    count = len(files)
    unit = features.astype(np.float32, copy=True)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    position = {file: i for i, file in enumerate(files)}
    group = np.full(count, -1)  # pictures with the same bytes share a group
    for number, pair in enumerate(exact):
        if pair.first in position and pair.second in position:
            first = group[position[pair.first]]
            group[position[pair.first]] = group[position[pair.second]] = number if first < 0 else first
    near: list[tuple[float, int, int]] = []
    others: list[tuple[float, int, int]] = []
    found = 0
    for start in range(0, count, block):
        rows = np.arange(start, min(start + block, count))
        sims = unit[rows] @ unit[start:].T  # rows against themselves and every picture after them
        sims[np.arange(count - start)[None, :] <= (rows - start)[:, None]] = -2.0  # each pair once
        for row in rows[group[rows] >= 0]:
            sims[row - start, np.nonzero(group[start:] == group[row])[0]] = -2.0
        above = sims >= threshold
        found += int(np.count_nonzero(above))
        near = _most_similar(near + _largest(sims, MOST_PAIRS, start), MOST_PAIRS)
        sims[above] = -2.0
        others = _most_similar(others + _largest(sims, MOST_SIMILAR, start), MOST_SIMILAR)

    def pairs(chosen: list[tuple[float, int, int]]) -> list[DuplicatePair]:
        return [DuplicatePair(files[row], files[column], similarity) for similarity, row, column in chosen]

    return SimilarPairs(pairs([entry for entry in near if entry[0] >= threshold]), found, pairs(others))


def _largest(sims: np.ndarray, k: int, start: int) -> list[tuple[float, int, int]]:
    """The `k` largest entries of a block (above -2), as (similarity, row, column) of the whole set. Only the rows
    whose largest entry is among the k largest row maxima can hold them."""
    if not sims.size:
        return []
    maxima = sims.max(axis=1)
    rows = np.argpartition(maxima, -k)[-k:] if len(maxima) > k else np.arange(len(maxima))
    candidates = sims[rows]
    flat = np.argpartition(candidates, -k, axis=None)[-k:] if candidates.size > k else np.arange(candidates.size)
    return [(float(candidates[r, c]), int(start + rows[r]), int(start + c))
            for r, c in zip(*np.unravel_index(flat, candidates.shape)) if candidates[r, c] > -2.0]


def _most_similar(entries: list[tuple[float, int, int]], k: int) -> list[tuple[float, int, int]]:
    return sorted(entries, key=lambda entry: (-entry[0], entry[1], entry[2]))[:k]


def label_issues(files: list[str], labels: np.ndarray, features: np.ndarray, classes: list[str],
                 progress: Progress | None = None) -> tuple[list[LabelIssue], str]:
    """cleanlab's likely label errors and the other pictures that the out-of-fold classifier (a logistic regression
    on the features) puts in another class, most suspect first; and, when the check cannot be done, why."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    smallest = int(np.bincount(labels, minlength=len(classes)).min())
    folds = min(FOLDS, smallest)
    if folds < 2:
        return [], "the label check needs at least 2 pictures of every class"
    if progress:
        progress("labels", 0, 1)
    classifier = make_pipeline(Normalizer(), LogisticRegression(C=10.0, max_iter=2000))
    # One job each: their default process pools fork, and a fork inside the dashboard's server hung for good.
    probabilities = cross_val_predict(classifier, features, labels, method="predict_proba", n_jobs=1,
                                      cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    flagged = set(find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence",
                                    n_jobs=1).tolist())
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    suggested = probabilities.argmax(1)
    if progress:
        progress("labels", 1, 1)
    suspects = sorted((i for i in range(len(files)) if i in flagged or suggested[i] != labels[i]),
                      key=lambda i: quality[i])
    return [LabelIssue(files[i], classes[labels[i]], classes[int(suggested[i])], float(quality[i]), i in flagged)
            for i in suspects], ""


def health_backbone(preferred: str | None = None) -> str:
    """The backbone whose ImageNet features the check uses: `preferred` (default: the tutorial's) when its weights
    are on this machine, else one whose weights are, else `preferred` (downloaded when first needed)."""
    preferred = preferred or TrainConfig().backbone
    here = local_backbones()
    return preferred if preferred in here or not here else here[0]


def all_files(scan: DatasetScan) -> list[str]:
    """Every picture of the data set, split after split, relative to its folder."""
    return [scan.relative(path) for pictures in scan.samples.values() for path, _ in pictures]


def dataset_features(scan: DatasetScan, runs_dir: Path | None = None, backbone: str | None = None,
                     weights: str | Path | None = None, device: str = "cpu",
                     progress: Callable[[int, int], None] | None = None) -> PictureOutputs:
    """An untouched ImageNet backbone's features of every picture of the data set (by default `health_backbone`'s),
    kept beside the runs: the health check compares them, the feature maps show them as the reference. Raises
    WeightsError when the backbone's weights can be neither found nor downloaded."""
    return imagenet_outputs(backbone or health_backbone(), scan.root, all_files(scan), dataset_dir(scan.root, runs_dir),
                            weights, device, progress)


def reference_features(scan: DatasetScan, files: list[str], runs_dir: Path | None = None, backbone: str | None = None,
                       device: str = "cpu", progress: Callable[[int, int], None] | None = None,
                       only_kept: bool = False) -> PictureOutputs | None:
    """The untouched ImageNet backbone's features of some of the data set's pictures (a feature map's validation
    pictures): taken from those of every picture when the health check kept them, else computed for these pictures
    alone and kept apart (with `only_kept`, None when neither is kept). Raises WeightsError as dataset_features."""
    backbone = backbone or health_backbone()
    cache_dir = dataset_dir(scan.root, runs_dir)
    whole = imagenet_outputs(backbone, scan.root, all_files(scan), cache_dir, only_kept=True)
    if whole is not None:
        rows, unreadable = whole.rows(files), set(whole.unreadable)
        return PictureOutputs([whole.files[row] for row in rows], whole.features[rows], whole.logits[rows],
                              [file for file in files if file in unreadable])
    return imagenet_outputs(backbone, scan.root, files, cache_dir, None, device, progress, part="some",
                            only_kept=only_kept)


def check_health(scan: DatasetScan, runs_dir: Path | None = None, weights: str | Path | None = None,
                 backbone: str | None = None, device: str = "cpu", progress: Progress | None = None,
                 refresh: bool = False) -> HealthReport:
    """The data set's health check, read from beside the runs when it was made for these very pictures, else made
    and kept there. Near-duplicates and label issues need an ImageNet backbone's weights: without them the report
    says so and holds the rest."""
    scan.raise_if_invalid()
    backbone = backbone or health_backbone()
    files = all_files(scan)
    labels = np.array([label for pictures in scan.samples.values() for _, label in pictures], dtype=int)
    cache = dataset_dir(scan.root, runs_dir) / f"health-{backbone}.json"
    key = _report_key(scan.root, files, backbone)
    if not refresh and (saved := _read_report(cache, key)):
        return saved
    started = time.perf_counter()
    counts = scan.counts()
    exact = exact_duplicates(scan.root, files, progress)
    report = HealthReport(str(Path(scan.root).resolve()), key, list(scan.classes), counts, count_warnings(counts),
                          exact, [], [], backbone, pictures=len(files))
    try:
        outputs = dataset_features(scan, runs_dir, backbone, weights, device,
                                   (lambda done, total: progress("features", done, total)) if progress else None)
    except WeightsError as exc:
        report.backbone, report.unavailable = None, f"Near-duplicates and label errors were not checked: {exc}"
    else:
        position = {file: i for i, file in enumerate(files)}
        kept = outputs.files  # the readable ones
        similar = similar_pairs(kept, outputs.features, exact)
        report.near_duplicates, report.near_duplicate_pairs = similar.near, similar.count
        report.most_similar = similar.others
        report.label_issues, report.unavailable = label_issues(
            kept, labels[[position[file] for file in kept]], outputs.features, scan.classes, progress)
    report.seconds = time.perf_counter() - started
    _write_report(cache, report)
    return report


def _report_key(root: Path, files: list[str], backbone: str) -> str:
    return f"{HEALTH_FORMAT}-{backbone}-{NEAR_DUPLICATE}-{fingerprint(root, files)}"


def cached_health(scan: DatasetScan, runs_dir: Path | None = None, backbone: str | None = None) -> HealthReport | None:
    """The kept health check of exactly these pictures, or None when there is none (nothing is computed)."""
    backbone = backbone or health_backbone()
    return _read_report(dataset_dir(scan.root, runs_dir) / f"health-{backbone}.json",
                        _report_key(scan.root, all_files(scan), backbone))


def _read_report(path: Path, key: str) -> HealthReport | None:
    try:
        data = json.loads(path.read_text())
        return HealthReport.from_dict(data) if data.get("fingerprint") == key else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _write_report(path: Path, report: HealthReport) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with staging.staging_file(path) as partial:
            partial.write_text(json.dumps(report.to_dict(), indent=1))
            partial.rename(path)
    except OSError:
        pass  # not kept: computed again next time
