"""Errors a user can act on. Each message says what went wrong and what to do next."""


class StudioError(Exception):
    """Base class: the command line prints these as one line, the dashboard as a message."""


class DatasetError(StudioError):
    """The data set is missing, cannot be downloaded, or is not laid out as train/ and val/."""


class ArchiveError(StudioError):
    """A zip archive is damaged, too large, or holds paths that would escape its folder."""


class WeightsError(StudioError):
    """Pretrained weights cannot be found, downloaded or loaded."""


class ImageError(StudioError):
    """A file or upload is not a picture that can be read."""


class RunError(StudioError):
    """A saved run cannot be found or loaded."""


class TrainingCancelled(Exception):
    """Raised from a training callback to stop the run; what was trained so far is kept."""
