"""The data health check of one data set, for Home and Your own data: made on request with a progress bar (kept
beside the runs afterwards, so shown at once), with thumbnails of duplicates and label suspects, and the data set's
exclusion list to edit."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.data import DatasetScan, tutorial_data_dir
from core.errors import StudioError
from core.exclusions import read_exclusions, write_exclusions
from core.health import NEAR_DUPLICATE, DuplicatePair, HealthReport, cached_health, check_health, pairs_text
from core.models import BACKBONES
from core.runs import default_runs_dir, picture_path
from dashboard import state
from dashboard.widgets import ProgressBar, picture_gallery, private, show_error

PAIRS_SHOWN = 12  # duplicate pairs, and label suspects, shown at once


def health_panel(scan: DatasetScan, key: str) -> None:
    """The data set's health check: the kept one, or a button that makes it."""
    report = cached_health(scan, default_runs_dir())
    if report is None:
        st.caption("Looks for class imbalance, too few pictures, exact and near-duplicates (within a split, and "
                   "training pictures that leak into validation) and likely label errors. The first check reads every "
                   "picture once (about a second per 40 pictures on a CPU); it is kept until a picture changes.")
        if not st.button("Check the data's health", key=f"health-{key}"):
            return
        bar = ProgressBar("Checking...")
        try:
            report = check_health(scan, default_runs_dir(), device=str(state.device()), progress=bar.phase)
        except StudioError as exc:
            show_error(exc)
            return
        finally:
            bar.close()
    show_health(report, scan, key)


def show_health(report: HealthReport, scan: DatasetScan, key: str) -> None:
    near = f"Near-duplicates (≥ {NEAR_DUPLICATE:g})"
    numbers = {"Pictures": report.pictures, "Warnings": len(report.warnings),
               "Exact duplicates": len(report.exact_duplicates),
               near: max(report.near_duplicate_pairs, len(report.near_duplicates)),
               "Label suspects": len(report.label_issues)}
    with st.container(horizontal=True):
        for label, value in numbers.items():
            st.metric(label, value, border=True, width="content")
    for warning in report.warnings:
        st.warning(warning)
    if not report.warnings:
        st.success("Class counts: no class is more than 3 times another, and every class has enough pictures.")
    if report.unavailable:
        st.info(private(report.unavailable))
    root = scan.root
    exact = report.exact_duplicates
    for title, counted, pairs in (
            ("Exact duplicates: the same file content", pairs_text(len(exact), exact), exact),
            (f"Near-duplicates: ImageNet features at least {NEAR_DUPLICATE:g} similar", report.near_duplicates_text(),
             report.near_duplicates)):
        if pairs:
            across = any(pair.across_splits for pair in pairs)
            st.markdown(f"**{title}** ({counted}"
                        + (": validation then measures memory, not learning)" if across else ")"))
            show_pairs(root, pairs[:PAIRS_SHOWN])
    if report.most_similar:
        with st.expander("The most similar other pairs, for a look (not counted as duplicates)"):
            show_pairs(root, report.most_similar)
    if report.label_issues:
        flagged = sum(issue.flagged for issue in report.label_issues)
        st.markdown(f"**Label suspects** ({len(report.label_issues)}): pictures that a classifier trained on the "
                    f"other pictures' {BACKBONES[report.backbone].title} features puts in another class, most suspect "
                    f"first, with the probability it gives their folder's class; cleanlab finds {flagged} of them "
                    "likely label errors. A suspect may be mislabelled, or just unusual: look before leaving it out.")
        picture_gallery([(path, f"in {issue.given}, looks like {issue.suggested} ({issue.quality:.2f})"
                                + (" · cleanlab: likely error" if issue.flagged else ""))
                         for issue in report.label_issues[:PAIRS_SHOWN]
                         if (path := picture_path(root, issue.file))])
    exclusion_editor(report, scan, key)


def show_pairs(root: Path, pairs: list[DuplicatePair]) -> None:
    for pair in pairs:
        notes = [note for note, applies in (("across splits", pair.across_splits),
                                            ("in different classes", pair.classes_differ)) if applies]
        picture_gallery([(path, file) for file in (pair.first, pair.second) if (path := picture_path(root, file))])
        st.caption(f"similarity {pair.similarity:.3f}" + (f" · {', '.join(notes)}" if notes else ""))


def exclusion_editor(report: HealthReport, scan: DatasetScan, key: str) -> None:
    """The data set's exclusion list: flagged pictures to leave out of training (the files stay where they are)."""
    runs_dir = default_runs_dir()
    try:
        excluded = read_exclusions(scan.root, runs_dir)
    except StudioError as exc:
        show_error(exc)
        return
    if state.settings().shared and Path(scan.root).resolve() == tutorial_data_dir().resolve():
        st.caption(f"{len(excluded)} picture(s) of this data set are left out of training. On a shared studio the "
                   "tutorial's data set is everyone's: its exclusion list cannot be changed here.")
        return
    options = list(dict.fromkeys([*report.flagged, *excluded]))
    if not options:
        return
    with st.form(f"exclusions-{key}", border=False):
        chosen = st.multiselect("Leave these pictures out of training and evaluation", options, default=excluded,
                                key=f"excluded-{key}", placeholder="Choose flagged pictures")
        saved = st.form_submit_button("Save the exclusion list")
    if saved:
        try:
            excluded = write_exclusions(scan.root, chosen, runs_dir)
        except (StudioError, ValueError) as exc:
            show_error(exc)
            return
        st.success(f"Saved: {len(excluded)} picture(s) will be left out of training. The files stay where they are; "
                   "each run records which pictures it left out.")
    st.caption(f"Training leaves out the {len(excluded)} picture(s) on this list unless you untick it on the Train "
               "page.")
