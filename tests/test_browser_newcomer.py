"""The data health check in a real browser, run to its end from Home and from Your own data, in normal and in shared
mode, each on a fresh server: inside the server it once forked a process pool that waited for good.

The servers, the browser and `settle` are those of tests/test_browser.py.
"""
import io
import re
import time
import zipfile
from pathlib import Path

import pytest

from core.data import scan_dataset
from tests.conftest import REAL_DATA_DIR, REAL_MOBILENET_WEIGHTS
from tests.test_browser import SCREENSHOTS, browser, settle, streamlit_server  # noqa: F401  (browser: a fixture)

HEALTH_TIMEOUT_MS = 300_000  # the real set's features on a loaded 2-core CPU, beside a server


@pytest.fixture(scope="module")
def inputs(tiny_dataset, random_weights_dir) -> tuple[Path, Path]:
    """The data set and weights the servers get: the real ones when they are here (always in CI)."""
    if REAL_DATA_DIR and REAL_MOBILENET_WEIGHTS:
        return REAL_DATA_DIR, REAL_MOBILENET_WEIGHTS
    return tiny_dataset, random_weights_dir


def own_data_zip(source: Path, folder: Path) -> Path:
    """A small set of the source's pictures with a planted exact duplicate across splits and a picture of one class
    in another's folder, zipped as a user would."""
    scan = scan_dataset(source)
    first, second = scan.classes[:2]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for split, count in (("train", 8), ("val", 4)):
            for label, name in enumerate((first, second)):
                pictures = [path for path, found in scan.samples[split] if found == label][:count]
                for path in pictures:
                    archive.write(path, f"{split}/{name}/{path.name}")
        train_first = [path for path, found in scan.samples["train"] if found == 0]
        train_second = [path for path, found in scan.samples["train"] if found == 1]
        archive.write(train_first[0], f"val/{first}/copy-of-{train_first[0].name}")  # leaks into validation
        archive.write(train_second[-1], f"train/{first}/moved-{train_second[-1].name}")  # in the wrong folder
    path = folder / "my_insects.zip"
    path.write_bytes(buffer.getvalue())
    return path


def run_health_check(page) -> str:
    """Presses the health check's button and waits for its report; returns the page's text."""
    page.get_by_role("button", name="Check the data's health").click()
    page.get_by_text(re.compile(r"^Label suspects")).first.wait_for(timeout=HEALTH_TIMEOUT_MS)
    settle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    return page.locator("[data-testid='stApp']").inner_text()


@pytest.mark.parametrize("shared", [False, True], ids=["normal", "shared"])
def test_the_health_check_runs_to_its_end_from_home_and_from_your_own_data(inputs, browser, tmp_path,  # noqa: F811
                                                                           shared):
    data, weights = inputs
    (tmp_path / "data").mkdir()
    (tmp_path / "data/hymenoptera_data").symlink_to(data)
    archive = own_data_zip(data, tmp_path)
    settings = {"STUDIO_SHARED": "1"} if shared else {}
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    with streamlit_server(tmp_path, weights, **settings) as url:
        page.goto(url)
        settle(page)
        started = time.monotonic()
        text = run_health_check(page)
        assert re.search(r"Exact duplicates\s+\d+", text) and "Label suspects" in text, text
        if shared:  # the tutorial's list is everyone's: shown, not edited
            assert "its exclusion list cannot be changed here" in text, text
        else:
            assert page.get_by_role("button", name="Save the exclusion list").count() == 1
        print(f"Home's health check ({'shared' if shared else 'normal'}): {time.monotonic() - started:.1f} s")
        if not shared:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "health.png"), full_page=True)

        page.goto(f"{url}/Your_own_data")
        settle(page)
        if not shared:
            page.get_by_role("tab", name="Upload a zip").click()
        page.locator("input[type='file']").set_input_files(str(archive))
        page.get_by_role("button", name="Check the data's health").wait_for(timeout=120_000)
        settle(page)
        text = run_health_check(page)
        assert "Exact duplicates: the same file content (1 pair, 1 across splits" in text, text
        assert re.search(r"Label suspects \(\d+\)", text), text
        assert page.get_by_role("button", name="Save the exclusion list").count() == 1
        if not shared:
            page.screenshot(path=str(SCREENSHOTS / "your-own-data.png"), full_page=True)
    page.close()
