"""Errors a user can act on. Each message says what went wrong and what to do next, in the library's own
terms (the data root, STUDIO_WEIGHTS); `setting` names the setting that fixes it, so that the command line
and the pages can add how to change that setting in theirs."""
from __future__ import annotations

# The settings an error can point at. The command line and the dashboard each map them to a hint.
DATA_ROOT, DATA, WEIGHTS, RUNS_DIR, DEVICE, RUN = "data_root", "data", "weights", "runs_dir", "device", "run"


class StudioError(Exception):
    """Base class: the command line prints these as one line, the dashboard as a message."""

    setting: str | None = None

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        if setting:
            self.setting = setting


class ConfigError(StudioError, ValueError):
    """A backbone, scenario, device or recipe value that does not exist or is out of range."""


class DatasetError(StudioError):
    """The data set is missing, cannot be downloaded, or is not laid out as train/ and val/."""

    setting = DATA


class ArchiveError(StudioError):
    """A zip archive is damaged, too large, or holds paths that would escape its folder."""


class WeightsError(StudioError):
    """Pretrained weights cannot be found, downloaded or loaded."""

    setting = WEIGHTS


class ImageError(StudioError):
    """A file or upload is not a picture that can be read."""


class RunError(StudioError):
    """A saved run cannot be found, loaded or saved."""

    setting = RUN


class JobRefused(StudioError):
    """A training job is already running: only one trains at a time."""


class TrainingCancelled(Exception):
    """Raised from a training callback to stop the run; what was trained so far is kept."""


class ProcessLost(StudioError):
    """Another process of the run died, hung past the timeout or could not be reached (core.distributed)."""
