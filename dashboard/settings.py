"""The dashboard's settings, read from the environment when the server starts (state.settings() reads them once).

STUDIO_SHARED=1 deploys the dashboard for several people: no server paths are typed in or shown, each browser
session sees only its own uploads (and the tutorial's set), uploads share a quota, training has limits, and
only the session that started a job may cancel it. Each limit can also be set on its own, shared or not;
0 turns it off.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.errors import ConfigError
from core.jobs import JobLimits

SHARED_ENV = "STUDIO_SHARED"
UPLOAD_QUOTA_ENV = "STUDIO_UPLOAD_QUOTA_MB"
MAX_EPOCHS_ENV = "STUDIO_MAX_EPOCHS"
MAX_PICTURES_ENV = "STUDIO_MAX_PICTURES"
MAX_MINUTES_ENV = "STUDIO_MAX_MINUTES"
MODEL_MEMORY_ENV = "STUDIO_MODEL_MEMORY_MB"
MODEL_MEMORY_MB = 2048  # the models the pages keep loaded, all together, by default
SHARED_DEFAULTS = {UPLOAD_QUOTA_ENV: 2048, MAX_EPOCHS_ENV: 25, MAX_PICTURES_ENV: 5000, MAX_MINUTES_ENV: 30}


@dataclass(frozen=True)
class Settings:
    shared: bool = False
    upload_quota_mb: float | None = None  # all uploads together
    limits: JobLimits = field(default_factory=JobLimits)
    model_memory_mb: float = MODEL_MEMORY_MB  # the loaded models' weights, all together

    @property
    def model_memory_bytes(self) -> int:
        return int(self.model_memory_mb * 2**20)

    @property
    def upload_quota_bytes(self) -> int | None:
        return None if self.upload_quota_mb is None else int(self.upload_quota_mb * 2**20)


def read_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    shared = environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes", "on")

    def number(name: str, kind: type) -> float | int | None:
        text = environ.get(name, "").strip()
        if not text:
            return SHARED_DEFAULTS.get(name) if shared else None
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if value < 0:
            raise ConfigError(f"{name} must be a {'whole ' if kind is int else ''}number, 0 for no limit "
                              f"(got {text!r}).")
        return value or None

    return Settings(shared=shared, upload_quota_mb=number(UPLOAD_QUOTA_ENV, float),
                    limits=JobLimits(max_epochs=number(MAX_EPOCHS_ENV, int),
                                     max_pictures=number(MAX_PICTURES_ENV, int),
                                     max_minutes=number(MAX_MINUTES_ENV, float)),
                    model_memory_mb=number(MODEL_MEMORY_ENV, float) or MODEL_MEMORY_MB)
