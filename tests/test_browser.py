"""End to end in a real browser: `streamlit run` on a free localhost port, driven by headless Chromium.

Needs Debian's `chromium` (installed by .ci/run). Screenshots of every page are saved in
test-artifacts/screenshots (or $STUDIO_SCREENSHOTS_DIR); the README shows them.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.data import scan_dataset
from core.runs import save_run
from core.train import TrainConfig, train
from tests.conftest import REAL_DATA_DIR, REAL_MOBILENET_WEIGHTS

PROJECT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS_DIR") or PROJECT / "test-artifacts/screenshots")
PAGES = {"home": "", "train": "Train", "compare": "Compare", "classify": "Classify", "your-own-data": "Your_own_data"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_home(tmp_path_factory, tiny_dataset, random_weights_dir):
    """Data, weights and two trained runs (finetune and frozen): the real set when there is one."""
    home = tmp_path_factory.mktemp("browser")
    (home / "data").mkdir()
    data_dir, weights = (REAL_DATA_DIR, REAL_MOBILENET_WEIGHTS) if REAL_DATA_DIR and REAL_MOBILENET_WEIGHTS \
        else (tiny_dataset, random_weights_dir)
    (home / "data/hymenoptera_data").symlink_to(data_dir)
    scan = scan_dataset(data_dir)
    for scenario in ("finetune", "frozen"):
        config = TrainConfig(backbone="mobilenet_v2", scenario=scenario, epochs=2, device="cpu")
        save_run(train(config, scan, weights), scan, home / "runs")
    return home, weights, scan


@pytest.fixture(scope="module")
def server(app_home):
    home, weights, _ = app_home
    port = free_port()
    env = {**os.environ, "STUDIO_DATA_ROOT": str(home / "data"), "STUDIO_RUNS_DIR": str(home / "runs"),
           "STUDIO_WEIGHTS": str(weights), "STUDIO_NETGUARD_LOG": str(home / "network-attempts.log")}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("streamlit did not start:\n" + process.stdout.read())
    yield url
    process.terminate()
    output = process.communicate(timeout=30)[0]
    attempts = home / "network-attempts.log"
    tried = attempts.read_text() if attempts.exists() else ""
    assert not tried, f"the app tried to reach the network:\n{tried}"
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("STUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


def settle(page) -> None:
    """Wait until Streamlit has finished running the page's script."""
    page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
    page.wait_for_timeout(500)
    page.wait_for_function("""() => {
        const state = document.querySelector("[data-testid='stApp']").dataset.testScriptState;
        return state === "notRunning";
    }""", timeout=120_000)
    page.wait_for_timeout(1500)  # charts and images lay out after the script ends


def test_every_page_opens_without_an_exception(server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    titles = {"home": "Transfer Learning Studio", "train": "Train", "compare": "Compare", "classify": "Classify",
              "your-own-data": "Your own data"}
    for name, path in PAGES.items():
        page.goto(f"{server}/{path}")
        settle(page)
        assert page.locator("h1").first.inner_text().strip() == titles[name]
        assert page.locator("[data-testid='stException']").count() == 0, name
        assert page.get_by_text("Page not found").count() == 0, name
        if name == "home":
            assert "Found at" in page.locator("[data-testid='stAlert']").first.inner_text()
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.close()


def test_a_photo_uploaded_on_classify_is_classified(server, browser, app_home):
    _, _, scan = app_home
    photo, label = scan.samples["val"][-1]
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(f"{server}/Classify")
    settle(page)
    page.locator("input[type='file']").set_input_files(str(photo))
    page.wait_for_selector("[data-testid='stMetricValue']", timeout=120_000)
    settle(page)
    predicted = [m.inner_text().strip() for m in page.locator("[data-testid='stMetricValue']").all()]
    assert len(predicted) == 2 and all(p in scan.classes for p in predicted), predicted
    assert scan.classes[label] in predicted
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "classify-result.png"), full_page=True)
    page.close()
