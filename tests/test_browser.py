"""End to end in a real browser: `streamlit run` on a free localhost port, driven by headless Chromium.

Needs Debian's `chromium` (installed by .ci/run). Screenshots of every page are saved in
test-artifacts/screenshots (or $STUDIO_SCREENSHOTS_DIR); the README shows them. A second server, in shared mode
(STUDIO_SHARED=1), is checked for server paths on the pages a visitor reads first.
"""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.data import scan_dataset
from core.jobs import SAVE_BEFORE_EXIT_S
from core.runs import list_runs, save_run
from core.train import TrainConfig, train
from tests.conftest import REAL_DATA_DIR, REAL_MOBILENET_WEIGHTS, UNTRAINED, copy_run

PROJECT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS_DIR") or PROJECT / "test-artifacts/screenshots")
PAGES = {"home": "", "train": "Train", "compare": "Compare", "experiments": "Experiments", "mistakes": "Mistakes",
         "classify": "Classify", "your-own-data": "Your_own_data"}
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


@contextlib.contextmanager
def streamlit_server(home: Path, weights: Path, **settings: str):
    """The dashboard (scripts.serve: `streamlit run streamlit_app.py`) on a free localhost port with the studio's
    settings; yields its URL."""
    port = free_port()
    env = {**os.environ, "STUDIO_DATA_ROOT": str(home / "data"), "STUDIO_RUNS_DIR": str(home / "runs"),
           "STUDIO_WEIGHTS": str(weights), "STUDIO_NETGUARD_LOG": str(home / "network-attempts.log"), **settings}
    process = subprocess.Popen(  # as ./run_app.sh starts it
        [sys.executable, "-m", "scripts.serve", "--server.headless", "true",
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
    try:
        yield url
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    attempts = home / "network-attempts.log"
    tried = attempts.read_text() if attempts.exists() else ""
    assert not tried, f"the app tried to reach the network:\n{tried}"
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def server(app_home):
    home, weights, _ = app_home
    with streamlit_server(home, weights) as url:
        yield url


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
    titles = {"home": "Transfer Learning Studio", "train": "Train", "compare": "Compare", "experiments": "Experiments",
              "mistakes": "Mistakes", "classify": "Classify", "your-own-data": "Your own data"}
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


def test_a_click_on_a_confusion_cell_shows_its_pictures(server, browser, app_home):
    home = app_home[0]
    run = next(run for run in list_runs(home / "runs").runs if run.scenario == "finetune")
    right = run.val_predictions.confusion(len(run.class_names))[0][0]  # the first class, predicted as itself
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(f"{server}/Compare")
    settle(page)
    matrix = page.locator("[data-testid='stPlotlyChart']").filter(has_text="predicted").first
    matrix.scroll_into_view_if_needed()
    before = page.locator("[data-testid='stImage']").count()
    cells = matrix.locator("g.trace.scatter path.point")
    assert cells.count() == len(run.class_names) ** 2
    box = cells.first.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    chosen = page.locator("[data-testid='stSelectbox'] input").first  # the cell's box, under the matrix
    page.wait_for_function("([box, text]) => box.value === text",
                           arg=[chosen.element_handle(), f"{run.class_names[0]} predicted as {run.class_names[0]} "
                                                         f"({right})"], timeout=60_000)
    settle(page)
    assert page.locator("[data-testid='stImage']").count() - before == min(right, 24)
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "compare-cell.png"), full_page=True)
    page.close()


@pytest.fixture
def experiment_server(app_home, tmp_path):
    """A server of its own, with the data and weights of app_home and no runs: the experiment's job and runs stay
    out of the module's server."""
    _, weights, scan = app_home
    (tmp_path / "data").mkdir()
    (tmp_path / "data/hymenoptera_data").symlink_to(scan.root)
    with streamlit_server(tmp_path, weights) as url:
        yield url


def test_a_tiny_experiment_started_in_the_browser_draws_accuracy_by_size_with_bands(experiment_server, browser):
    server = experiment_server
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(f"{server}/Experiments")  # the fresh server's first visit, by a direct link
    settle(page)
    # the studio's own page list, not Streamlit's list of the files in pages/ ("streamlit app", "home"...)
    assert page.get_by_role("link", name="Home").count() == 1 and page.get_by_text("streamlit app").count() == 0
    for label, value in (("Seeds", "3"), ("Epochs", "2")):  # 3: the fewest with a band
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        settle(page)
    estimate = page.get_by_text(re.compile(r"18 cells \(1 scenario × 3 seeds × 6 sizes\)")).first
    estimate.wait_for(timeout=60_000)
    assert re.search(r"about \d+(\.\d)? (s|min)", estimate.inner_text()), estimate.inner_text()
    page.get_by_role("button", name="Start experiment").click()
    page.get_by_text(re.compile(r"Training frozen · seed \d · \w+ per class")).first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"finished in")).first.wait_for(timeout=300_000)
    settle(page)
    page.get_by_text("Accuracy against training pictures per class").first.wait_for(timeout=60_000)
    chart = page.locator("[data-testid='stPlotlyChart']").first
    assert chart.locator("path.js-fill").count() >= 1  # the shaded 95% band
    assert page.get_by_text(re.compile(r"18 of 18 cells saved")).count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "experiments.png"), full_page=True)
    page.close()


def test_shared_mode_shows_no_server_path_in_the_browser(app_home, browser):
    home, weights, _ = app_home
    server_paths = {str(path) for path in (home, weights, PROJECT, Path.home(), REAL_DATA_DIR) if path}
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    with streamlit_server(home, weights, STUDIO_SHARED="1") as url:
        for name in ("home", "train", "your-own-data"):
            page.goto(f"{url}/{PAGES[name]}")
            settle(page)
            text = page.locator("[data-testid='stApp']").inner_text()
            assert page.locator("[data-testid='stException']").count() == 0, name
            assert not [path for path in server_paths if path in text], (name, text)
            assert not re.search(r"(?<![\w.:/])/(tmp|home|root|work|usr|var|srv|opt)\b", text), (name, text)
            assert "A folder on this machine" not in text and "Folder with train/ and val/" not in text, name
            if name == "home":
                assert "Found: " in text and "local file" in text, text
            if name == "train":
                assert "Limits on this studio: at most 25 epochs per scenario" in text, text
    page.close()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_stopping_the_server_mid_job_saves_the_run_marked_cancelled(tmp_path, tiny_dataset, random_weights_dir,
                                                                    browser, number):
    """As ./run_app.sh starts it (scripts/serve.py): SIGTERM is a container stop, SIGHUP a closed terminal."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/hymenoptera_data").symlink_to(tiny_dataset)
    port = free_port()
    env = {**os.environ, "STUDIO_DATA_ROOT": str(tmp_path / "data"), "STUDIO_RUNS_DIR": str(tmp_path / "runs"),
           "STUDIO_WEIGHTS": str(random_weights_dir), "STUDIO_NETGUARD_LOG": str(tmp_path / "network.log")}
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.serve", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false"], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        deadline = time.time() + 60
        while time.time() < deadline:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            time.sleep(0.5)
        page.goto(f"http://127.0.0.1:{port}/Train")
        settle(page)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text(re.compile(r"epoch [2-9]/25")).first.wait_for(timeout=240_000)
        page.close()
        process.send_signal(number)
        output = process.communicate(timeout=SAVE_BEFORE_EXIT_S + 60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in output, output
    [run] = list_runs(tmp_path / "runs").runs
    assert (run.scenario, run.status) == ("finetune", "cancelled") and 1 <= len(run.history) < 25, output


@pytest.fixture
def newcomer_server(tmp_path, tiny_dataset, tiny_run, random_weights_dir):
    """A server as a newcomer meets it offline: only MobileNetV2's weights here, and saved runs of two data sets,
    the newest trained one on "abc", and a newer run cancelled before its first epoch finished."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/hymenoptera_data").symlink_to(tiny_dataset)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/mobilenet_v2-test.pth").symlink_to(random_weights_dir / "mobilenet_v2-test.pth")
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.path, runs / tiny_run.id)
    frozen = {"scenario": "frozen"}
    copy_run(tiny_run, runs, "20980101-000000-frozen-mobilenet_v2-0abc", config=frozen,
             created="2098-01-01T00:00:00+00:00", dataset={"path": "/elsewhere/abc"})
    copy_run(tiny_run, runs, "20990101-000000-frozen-mobilenet_v2-0ep0", config=frozen,
             created="2099-01-01T00:00:00+00:00", **UNTRAINED)
    with streamlit_server(tmp_path, tmp_path / "weights", STUDIO_NETGUARD_LOG=str(tmp_path / "offline.log")) as url:
        yield url


def backbone_shown(page) -> str:
    """What the Train page's Backbone box shows."""
    box = page.locator("[data-testid='stSelectbox']").nth(1)
    return " ".join([box.inner_text(), *(field.input_value() for field in box.locator("input").all())])


def chips(page) -> list[str]:
    """The chosen options of the page's first multiselect."""
    tags = page.locator("[data-testid='stMultiSelect']").first.locator("[data-tag-index]").all()
    return list(dict.fromkeys(tag.inner_text().strip() for tag in tags))


def test_a_newcomer_offline_gets_honest_defaults_a_form_that_remembers_and_the_time_left(newcomer_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(newcomer_server)
    settle(page)
    assert page.get_by_role("link", name="Home").count() == 1 and page.get_by_text("streamlit app").count() == 0
    assert page.get_by_role("button", name="Deploy").count() == 0
    assert "ResNet-18: not on this machine yet" in page.locator("[data-testid='stApp']").inner_text()

    # 1, 2: the defaults are the newest data set's trained runs; the untrained run is never offered to Classify
    for path in ("Compare", "Classify"):
        page.goto(f"{newcomer_server}/{path}")
        settle(page)
        assert [chip.split(" · ")[2] for chip in chips(page)] == ["abc"], (path, chips(page))
    page.locator("[data-testid='stMultiSelect'] input").first.click()
    offered = [option.inner_text() for option in page.locator("[role='option']").all()]
    assert offered and not [option for option in offered if "no epoch finished" in option], offered
    page.keyboard.press("Escape")

    # 3: MobileNetV2 is the default here; ResNet-18 cannot be had offline, and scratch trains all the same
    page.goto(f"{newcomer_server}/Train")
    settle(page)
    assert "MobileNetV2" in backbone_shown(page)
    page.goto(f"{newcomer_server}/Train?backbone=resnet18&scenarios=finetune&scenarios=scratch&epochs=3")
    settle(page)
    assert "ResNet-18" in backbone_shown(page)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("cannot be downloaded").first.wait_for(timeout=120_000)
    assert page.get_by_text("Started From scratch only").count() == 1

    # 5: the time left is shown once measured ("estimating" before); tests/test_jobs.py checks its accuracy
    progress = page.get_by_text(re.compile(r"Training scratch")).first
    progress.wait_for(timeout=120_000)
    seen, deadline = set(), time.time() + 300
    while page.get_by_text(re.compile(r"finished in")).count() == 0 and time.time() < deadline:
        text = page.locator("[data-testid='stProgress']").all_inner_texts()
        seen.update(text)
        page.wait_for_timeout(250)
    page.get_by_text(re.compile(r"finished in")).first.wait_for(timeout=300_000)
    assert any(re.search(r"so far · (estimating time left|about [\d.]+ (s|min) left)", text) for text in seen), seen

    # 4: the form keeps the choices on another page and after a reload
    page.get_by_role("link", name="Compare", exact=True).click()
    settle(page)
    page.get_by_role("link", name="Train").click()
    settle(page)
    assert "ResNet-18" in backbone_shown(page)
    page.reload()
    settle(page)
    assert "ResNet-18" in backbone_shown(page)
    assert {"Finetune", "From scratch"} <= set(chips(page)), chips(page)
    page.close()


def content_height(page) -> int:
    return page.evaluate("document.querySelector(\"[data-testid='stMainBlockContainer']\").scrollHeight")


def test_on_a_phone_home_and_compare_stay_short_and_enter_never_starts_training(server, browser, app_home, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(server)
    settle(page)
    assert content_height(page) < 3200  # six small samples, two to a row (eight full-width ones took 4,341 px)
    page.goto(f"{server}/Compare")
    settle(page)
    assert content_height(page) < 9000  # one gallery open, twelve small pictures (it ran past 12,000 px)

    page.goto(f"{server}/Train")
    settle(page)
    jobs_shown = re.compile(r"^(No training yet|Job \d+ )")  # the panel: no job yet, or an earlier test's, finished
    before = page.get_by_text(jobs_shown).all_inner_texts()
    assert before and page.locator("[data-testid='stProgress']").count() == 0
    page.get_by_text("Advanced: the tutorial recipe's settings").click()
    epochs = page.get_by_label("Epochs (all phases)", exact=True)
    epochs.fill("2")
    epochs.press("Enter")
    page.wait_for_timeout(2000)
    settle(page)
    assert page.get_by_text(jobs_shown).all_inner_texts() == before  # Enter in a recipe field starts nothing
    assert page.locator("[data-testid='stProgress']").count() == 0

    # A file of a type the uploader would refuse is named, and the previous photo's answers go away
    _, _, scan = app_home
    page.goto(f"{server}/Classify")
    settle(page)
    page.locator("input[type='file']").set_input_files(str(scan.samples["val"][0][0]))
    page.wait_for_selector("[data-testid='stMetricValue']", timeout=120_000)
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 not a picture")
    page.locator("input[type='file']").set_input_files(str(tmp_path / "report.pdf"))
    page.get_by_text("report.pdf is not a picture").first.wait_for(timeout=60_000)
    settle(page)
    assert page.locator("[data-testid='stMetricValue']").count() == 0
    page.close()


def test_on_a_phone_compare_keeps_each_runs_accuracy_in_view(server, browser):
    """The Summary and Per-class tables showed only the long run names at 390 px, the accuracy off-screen."""
    page = browser.new_page(viewport={"width": 390, "height": 2400})
    page.goto(f"{server}/Compare")
    settle(page)
    page.locator("[data-testid='stDataFrame']").nth(1).wait_for(timeout=60_000)  # grids are drawn after the script
    summary, per_class = page.locator("[data-testid='stDataFrame']").all()[:2]

    def headers(frame) -> list[str]:  # the grid renders only the columns in view, a moment after it shows
        frame.scroll_into_view_if_needed()
        frame.locator("[role='columnheader']").first.wait_for(state="attached", timeout=30_000)
        return [header.inner_text().strip() for header in frame.locator("[role='columnheader']").all()]

    assert "best val acc" in headers(summary), headers(summary)
    assert {"precision", "recall"} <= set(headers(per_class)), headers(per_class)
    page.screenshot(path=str(SCREENSHOTS / "compare-phone.png"))
    page.close()


@pytest.fixture
def fresh_runs_server(app_home, tmp_path):
    """A server with copies of app_home's runs, nothing computed from them yet: a first visit."""
    home, weights, scan = app_home
    (tmp_path / "data").mkdir()
    (tmp_path / "data/hymenoptera_data").symlink_to(scan.root)
    shutil.copytree(home / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("outputs-*.pt", "datasets"))
    with streamlit_server(tmp_path, weights) as url:
        yield url


def test_mistakes_first_visit_shows_its_controls_while_it_computes_and_draws_maps_on_request(fresh_runs_server,
                                                                                              browser):
    """The first visit computed ImageNet features of every picture, for minutes, before showing anything."""
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(fresh_runs_server)  # a visitor comes from Home
    settle(page)
    started = time.monotonic()
    page.get_by_role("link", name="Mistakes").click()
    toggle = page.get_by_text("Draw the feature maps", exact=True)
    toggle.wait_for(timeout=60_000)
    shown = time.monotonic() - started
    assert page.get_by_text("Pictures per run").count() == 1 and page.get_by_text("Map", exact=True).count() == 1
    progress = page.get_by_text(re.compile(r"its model on validation picture \d+ of \d+")).first
    progress.wait_for(timeout=60_000)  # the worst mistakes are computed below the controls, with their progress
    print(f"Mistakes, first visit: controls after {shown:.1f} s, then {progress.inner_text()!r} at "
          f"{time.monotonic() - started:.1f} s")
    settle(page)
    assert page.locator("[data-testid='stPlotlyChart']").count() == 0  # no map until asked for
    toggle.click()
    page.get_by_text(re.compile(r"ImageNet only: features of validation picture \d+ of \d+")).first.wait_for(
        timeout=120_000)
    maps = page.locator("[data-testid='stPlotlyChart']")
    maps.nth(2).wait_for(timeout=120_000)  # on a busy machine the page may still be drawing once the script has ended
    settle(page)
    assert maps.count() == 3  # the untouched backbone's, then each run's
    assert page.locator("[data-testid='stException']").count() == 0
    page.set_viewport_size({"width": 1400, "height": 4200})  # the whole page, maps included
    settle(page)
    page.screenshot(path=str(SCREENSHOTS / "mistakes.png"), full_page=True)
    page.close()


def test_a_recipe_picked_in_the_browser_puts_its_own_settings_into_the_form(server, browser):
    """Picking LP-FT once left the tutorial's 25 epochs and SGD in the browser's widgets, and trained with them."""
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto(f"{server}/Train")
    settle(page)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Recipe").click()
    page.get_by_role("option", name="LP-FT").click()
    settle(page)
    page.get_by_text("Advanced: the lp-ft recipe's settings").click()
    assert page.get_by_label("Epochs (all phases)").input_value() == "5"
    assert page.get_by_label("Learning rate", exact=True).input_value() == "0.000010"
    page.close()


def test_the_train_pages_picker_finds_a_convnext_and_says_its_input_and_where_its_weights_come_from(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(f"{server}/Train")
    settle(page)
    box = page.locator("[data-testid='stSelectbox']").filter(has_text="Backbone")
    box.click()
    page.keyboard.type("convnext_t")  # the picker searches as the user types
    option = page.get_by_role("option", name=re.compile(r"ConvNeXt Tiny.*convnext_tiny")).first
    option.wait_for(timeout=30_000)
    assert "downloads its weights" in option.inner_text() and "224 px" in option.inner_text()
    option.click()
    settle(page)
    caption = page.get_by_text(re.compile(r"Input 224 \(resize 236, bilinear\); 4.456 GFLOPS")).first
    caption.wait_for(timeout=30_000)
    assert "weights: download (109 MB)" in caption.inner_text()
    box.click()  # a backbone whose weights are here says so
    page.keyboard.type("mobilenet_v2")
    mobilenet = page.get_by_role("option", name=re.compile(r"mobilenet_v2")).first
    assert "weights here" in mobilenet.inner_text()
    page.close()
