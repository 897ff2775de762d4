"""Zip archives are checked before anything is written; extraction appears whole or not at all."""
import stat
import zipfile

import pytest

from core.archive import ArchiveLimits, check_zip, extract_zip
from core.errors import ArchiveError


def make_zip(path, members: dict[str, bytes], links: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def test_a_good_archive_is_extracted_under_its_final_name(tmp_path):
    archive = make_zip(tmp_path / "set.zip", {"set/train/a/1.txt": b"x", "set/val/a/1.txt": b"y"})
    result = extract_zip(archive, tmp_path / "out")
    assert (result / "set/train/a/1.txt").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "set.zip"]


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil.txt", "a/../../escape.txt", "C:/evil.txt"])
def test_paths_that_leave_the_folder_are_refused(tmp_path, name):
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})
    with pytest.raises(ArchiveError, match="refusing"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_links_are_refused(tmp_path):
    archive = make_zip(tmp_path / "link.zip", {"ok.txt": b"fine"}, links={"passwd": "/etc/passwd"})
    with pytest.raises(ArchiveError, match="symbolic link"):
        check_zip(archive)


def test_too_many_members_are_refused(tmp_path):
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(11)})
    with pytest.raises(ArchiveError, match="11 entries"):
        check_zip(archive, ArchiveLimits(max_members=10))


def test_too_large_an_archive_is_refused(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {"big.bin": bytes(range(256)) * 400})
    with pytest.raises(ArchiveError, match="unpacks to"):
        check_zip(archive, ArchiveLimits(max_total_bytes=50_000))


def test_a_zip_bomb_ratio_is_refused(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(5_000_000))
    with pytest.raises(ArchiveError, match="fold"):
        check_zip(path)


def test_a_damaged_archive_is_refused(tmp_path):
    archive = make_zip(tmp_path / "damaged.zip", {"a.txt": b"hello world" * 100})
    data = bytearray(archive.read_bytes())
    data[data.index(b"hello") + 3] ^= 0xFF  # corrupt the stored bytes: the CRC no longer matches
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="damaged"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "fake.zip"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        check_zip(path)
