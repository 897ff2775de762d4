"""Safe zip extraction: every member is checked before anything is written where it matters."""
from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import ArchiveError


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 20_000
    max_total_bytes: int = 2 * 1024**3  # uncompressed
    max_ratio: int = 200  # uncompressed / compressed size of one member: zip bombs go far beyond


def check_zip(zip_path: Path, limits: ArchiveLimits = ArchiveLimits()) -> list[zipfile.ZipInfo]:
    """Return the members of a zip after checking it is whole and holds nothing dangerous."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{zip_path.name} is not a readable zip archive ({exc}).") from exc
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_members:
            raise ArchiveError(f"{zip_path.name} holds {len(members)} entries; the limit is {limits.max_members}.")
        total = sum(member.file_size for member in members)
        if total > limits.max_total_bytes:
            raise ArchiveError(
                f"{zip_path.name} unpacks to {total / 1e9:.1f} GB; the limit is {limits.max_total_bytes / 1e9:.1f} GB."
            )
        for member in members:
            _check_member(zip_path.name, member, limits)
        try:
            damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(f"{zip_path.name} is damaged ({exc}). Download or zip it again.") from exc
        if damaged is not None:
            raise ArchiveError(f"{zip_path.name} is damaged: {damaged} fails its checksum. Download or zip it again.")
    return members


def _check_member(archive_name: str, member: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    name = member.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive_name} holds an absolute path ({name}); refusing to extract it.")
    if ".." in path.parts:
        raise ArchiveError(f"{archive_name} holds a path that leaves its folder ({name}); refusing to extract it.")
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{archive_name} holds a symbolic link ({name}); refusing to extract it.")
    if member.compress_size and member.file_size / member.compress_size > limits.max_ratio:
        ratio = member.file_size // member.compress_size
        raise ArchiveError(f"{archive_name}: {name} expands {ratio}-fold; refusing it.")


def extract_zip(zip_path: Path, destination: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Check `zip_path`, extract it into a temporary folder beside `destination`, then rename.

    `destination` appears whole or not at all. Returns `destination`.
    """
    check_zip(zip_path, limits)
    destination = Path(destination)
    if destination.exists():
        raise ArchiveError(f"{destination} already exists; remove it or choose another name.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging)
        staging.rename(destination)
    except OSError as exc:
        raise ArchiveError(f"Could not extract {zip_path.name} into {destination.parent} ({exc}).") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination
