"""Every dashboard page through streamlit.testing: no data, data without runs, finished runs, a live job."""
import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import core.predict
from core.analysis import class_metrics
from core.data import scan_dataset
from core.errors import ConfigError
from core.exclusions import read_exclusions, write_exclusions
from core.health import dataset_features, reference_features
from core.jobs import JobLimits
from core.runs import accuracy_text, list_runs, read_run
from dashboard import charts, state, train_form, widgets
from dashboard.settings import Settings, read_settings
from dashboard.widgets import run_label
from tests.conftest import UNTRAINED, copy_run, make_picture

PROJECT = Path(__file__).resolve().parents[1]
PAGES = ["streamlit_app.py", "pages/1_Train.py", "pages/2_Compare.py", "pages/5_Experiments.py", "pages/6_Mistakes.py",
         "pages/3_Classify.py", "pages/4_Your_own_data.py"]


@pytest.fixture
def app_env(tmp_path, monkeypatch, random_weights_dir):
    """Empty data root and runs folder for the app; caches and the job manager start fresh."""
    monkeypatch.setenv("STUDIO_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDIO_WEIGHTS", str(random_weights_dir))
    st.cache_data.clear()
    st.cache_resource.clear()
    error_details = st.get_option("client.showErrorDetails")
    yield tmp_path
    jobs = state.training_jobs()
    job = jobs.snapshot()
    jobs.cancel(owner=job.owner if job else None)
    jobs.wait(60)
    st.cache_resource.clear()
    st.set_option("client.showErrorDetails", error_details)  # shared mode hides tracebacks


@pytest.fixture
def with_data(app_env, tiny_dataset):
    (app_env / "data").mkdir()
    (app_env / "data/hymenoptera_data").symlink_to(tiny_dataset)
    return app_env


@pytest.fixture
def with_runs(with_data, tiny_run):
    shutil.copytree(tiny_run.path, with_data / "runs" / tiny_run.id)
    return with_data


def open_page(page: str) -> AppTest:
    app = AppTest.from_file(str(PROJECT / page), default_timeout=120)
    return app.run()


def assert_healthy(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("state", ["app_env", "with_data", "with_runs"])
def test_every_page_renders_in_every_state(page, state, request):
    request.getfixturevalue(state)
    assert_healthy(open_page(page))


def test_home_without_data_offers_the_download_and_explains_offline_use(app_env, network_attempts):
    app = open_page("streamlit_app.py")
    assert "not at" in app.warning[0].value
    assert any("Offline?" in info.value for info in app.info)
    download = next(b for b in app.button if b.label.startswith("Download the data set"))
    app = download.click().run()
    assert_healthy(app)
    assert "Could not download" in app.error[0].value and "STUDIO_DATA_ROOT" in app.error[0].value
    assert network_attempts.attempts()


def test_home_with_data_shows_counts_samples_weights_and_device(with_data):
    app = open_page("streamlit_app.py")
    assert "2 classes, 16 training and 8 validation pictures" in app.success[0].value
    assert len(app.get("imgs")) >= 2 or len(app.image) >= 2
    text = " ".join(m.value for m in app.markdown)
    assert "ResNet-18" in text and "resnet18.pth" in text and "CPU" in text


def test_train_page_defaults_to_the_tutorial(with_data):
    app = open_page("pages/1_Train.py")
    assert app.multiselect(key="scenarios").value == ["finetune", "frozen"]
    keys = ("epochs", "batch_size", "lr", "momentum", "step_size", "gamma")
    recipe = {key: app.number_input(key=key).value for key in keys}
    assert recipe == {"epochs": 25, "batch_size": 4, "lr": 0.001, "momentum": 0.9, "step_size": 7, "gamma": 0.1}
    assert app.selectbox(key="dataset").value.startswith("Tutorial")
    assert app.selectbox(key="backbone").value == "resnet18"
    assert "No training yet" in app.info[0].value


def test_train_says_the_time_it_will_take_before_start_and_warns_when_it_is_long(with_data, monkeypatch):
    app = open_page("pages/1_Train.py")
    app.selectbox(key="backbone").set_value("mobilenet_v2")
    app = app.run()
    estimate = next(c.value for c in app.caption if c.value.startswith("Estimated time: about"))
    assert "for 2 scenario(s) of 25 epochs on 16 training pictures" in estimate and not app.warning
    minutes = float(re.search(r"about \*\*([\d.]+) (s|min)\*\*", estimate).group(1))
    app.number_input(key="epochs").set_value(5)
    app = app.run()
    shorter = next(c.value for c in app.caption if c.value.startswith("Estimated time: about"))
    assert "of 5 epochs" in shorter and shorter != estimate and minutes > 0
    monkeypatch.setattr(train_form, "LONG_JOB_S", 0.0)
    app = app.run()
    assert app.warning[0].value.startswith("Estimated time: about") and "frozen scenario alone" in app.warning[0].value


def test_a_recipe_brings_its_settings_and_the_found_learning_rate_goes_into_the_form(with_data):
    app = open_page("pages/1_Train.py")
    assert app.selectbox(key="recipe").value == "tutorial" and app.selectbox(key="optimizer").value == "sgd"
    app.multiselect(key="scenarios").set_value(["finetune"])
    app = app.selectbox(key="recipe").set_value("fine-tune").run()
    assert_healthy(app)
    assert any("fastai's Learner.fine_tune" in c.value for c in app.caption)
    assert (app.number_input(key="epochs").value, app.number_input(key="lr").value,
            app.selectbox(key="optimizer").value, app.number_input(key="head_epochs").value,
            app.number_input(key="lr_spread").value) == (5, 0.002, "adamw", 1, 100.0)
    app.multiselect(key="scenarios").set_value(["frozen"])
    app = app.selectbox(key="recipe").set_value("tutorial").run()
    app = app.button(key="find_lr").click().run()
    assert_healthy(app)
    assert app.get("plotly_chart") and not app.error
    use = app.button(key="use_lr")
    suggested = float(use.label.split()[1])
    app = use.click().run()
    assert app.number_input(key="lr").value == pytest.approx(suggested)
    app = app.button(key="start").click().run()
    assert_healthy(app)
    state.training_jobs().wait(120)
    run = list_runs(with_data / "runs").runs[0]
    assert run.config.lr == pytest.approx(suggested) and run.config.recipe == "tutorial"


def test_a_recipe_that_needs_the_backbone_to_train_is_refused_for_frozen_in_words(with_data):
    app = open_page("pages/1_Train.py")
    app.multiselect(key="scenarios").set_value(["frozen"])
    app = app.selectbox(key="recipe").set_value("lp-ft").run()
    app = app.button(key="start").click().run()
    assert_healthy(app)
    assert "needs a scenario that trains the backbone" in app.error[0].value
    assert not list_runs(with_data / "runs").runs


def test_the_folder_box_is_shown_only_for_another_folder(with_data):
    app = open_page("pages/1_Train.py")
    assert not app.text_input
    app = app.selectbox(key="dataset").set_value("Another folder...").run()
    assert [box.label for box in app.text_input] == ["Folder with train/ and val/"]
    assert not any(c.value.startswith("Estimated time") for c in app.caption)  # no folder yet: nothing to estimate


def start_training(app: AppTest, epochs: int) -> AppTest:
    app.selectbox(key="backbone").set_value("mobilenet_v2")
    app.multiselect(key="scenarios").set_value(["frozen"])
    app.number_input(key="epochs").set_value(epochs)
    return app.button(key="start").click().run()


def test_a_job_trains_in_the_background_and_its_run_appears_everywhere(with_data):
    app = start_training(open_page("pages/1_Train.py"), epochs=2)
    assert_healthy(app)
    job = state.training_jobs().wait(120)
    assert job.state == "completed", job.message
    app = open_page("pages/1_Train.py")
    assert "finished" in app.success[0].value
    compare = open_page("pages/2_Compare.py")
    assert_healthy(compare)
    assert compare.multiselect[0].value == [job.scenarios[0].run_id]
    run = list_runs().runs[0]
    assert run.config.fast, "the dashboard must train on the fast paths (docs/performance.md)"


def test_a_second_start_is_refused_and_cancel_keeps_the_work(with_data):
    first_tab = start_training(open_page("pages/1_Train.py"), epochs=400)
    deadline = time.time() + 60
    while not (state.training_jobs().snapshot().scenarios[0].history) and time.time() < deadline:
        time.sleep(0.2)
    second_tab = start_training(open_page("pages/1_Train.py"), epochs=1)
    assert "still training" in second_tab.error[0].value
    first_tab = first_tab.run()
    first_tab.button(key="cancel").click().run()
    job = state.training_jobs().wait(60)
    assert job.state == "cancelled" and job.scenarios[0].status == "cancelled"
    runs = list_runs().runs
    assert len(runs) == 1 and runs[0].status == "cancelled" and len(runs[0].history) >= 1


def test_weights_that_cannot_be_had_are_said_at_start_and_what_can_train_still_trains(with_data, monkeypatch,
                                                                                      network_attempts):
    monkeypatch.delenv("STUDIO_WEIGHTS")  # ResNet-18's ImageNet weights are nowhere here, and the network is closed
    app = open_page("pages/1_Train.py")
    app.multiselect(key="scenarios").set_value(["finetune", "scratch"])
    app.number_input(key="epochs").set_value(1)
    app = app.button(key="start").click().run()
    error = app.error[0].value
    assert "Finetune start from ResNet-18's ImageNet weights" in error and "cannot be downloaded" in error
    assert "STUDIO_WEIGHTS" in error and "--weights" not in error  # no command-line flags on a web page
    assert "Started From scratch only" in app.info[0].value
    job = state.training_jobs().wait(300)
    assert [(s.scenario, s.status) for s in job.scenarios] == [("scratch", "completed")]
    home = open_page("streamlit_app.py")
    assert any("❌ **ResNet-18**: not on this machine, and the download failed" in m.value for m in home.markdown)


def test_the_default_backbone_is_one_whose_weights_are_here(with_data, monkeypatch, random_weights_dir, tmp_path):
    only_mobilenet = tmp_path / "only-mobilenet"
    only_mobilenet.mkdir()
    (only_mobilenet / "mobilenet_v2-test.pth").symlink_to(random_weights_dir / "mobilenet_v2-test.pth")
    monkeypatch.setenv("STUDIO_WEIGHTS", str(only_mobilenet))
    assert open_page("pages/1_Train.py").selectbox(key="backbone").value == "mobilenet_v2"


def test_compare_shows_charts_tables_and_the_gallery(with_runs, tiny_run):
    app = open_page("pages/2_Compare.py")
    assert app.multiselect[0].value == [tiny_run.id]
    assert len(app.get("plotly_chart")) >= 6
    assert any("mistake(s) in 8 pictures" in m.value for m in app.markdown)
    assert len(app.image) > 0 or len(app.get("imgs")) > 0


def png_bytes(color: str) -> bytes:
    buffer = io.BytesIO()
    make_picture(color, 11).save(buffer, "PNG")
    return buffer.getvalue()


def test_classify_predicts_an_upload_and_never_reloads_the_model(with_runs, monkeypatch):
    loads = []
    real_load = core.predict.load_model
    monkeypatch.setattr(core.predict, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    app = open_page("pages/3_Classify.py")
    app.file_uploader[0].set_value(("red.png", png_bytes("red"), "image/png"))
    app = app.run()
    assert_healthy(app)
    assert app.metric[0].value in ("red", "blue")
    app = app.run()  # a rerun
    app.file_uploader[0].set_value(("blue.png", png_bytes("blue"), "image/png"))
    app = app.run()
    assert app.metric[0].value in ("red", "blue")
    assert len(loads) == 1


def test_classify_explains_a_file_that_is_not_a_picture(with_runs):
    app = open_page("pages/3_Classify.py")
    app.file_uploader[0].set_value(("holiday.jpg", b"this is not a jpeg", "image/jpeg"))
    app = app.run()
    assert_healthy(app)
    assert "holiday.jpg is not a picture" in app.error[0].value


def test_each_uploader_states_the_limit_it_enforces(with_runs):
    """The uploader said "500MB per file" where the page and the README said 20 MB."""
    classify = open_page("pages/3_Classify.py")
    assert classify.file_uploader[0].proto.max_upload_size_mb == widgets.MAX_PHOTO_MB == 20
    zips = open_page("pages/4_Your_own_data.py")
    assert zips.file_uploader[0].proto.max_upload_size_mb == widgets.MAX_ZIP_MB
    config = (PROJECT / ".streamlit/config.toml").read_text()
    assert f"maxUploadSize = {widgets.MAX_ZIP_MB}\n" in config  # no upload may be larger than the largest stated


def test_classify_refuses_a_photo_over_the_size_limit(with_runs, monkeypatch):
    monkeypatch.setattr(widgets, "MAX_PHOTO_MB", 1)  # a camera's photo is checked here, not by an uploader
    app = open_page("pages/3_Classify.py")
    app.file_uploader[0].set_value(("big.png", png_bytes("red") + bytes(2**20), "image/png"))
    app = app.run()
    assert_healthy(app)
    assert "the limit is" in app.error[0].value and not app.metric


def zip_bytes(folder: Path, prefix: str = "") -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in folder.rglob("*"):
            archive.write(file, f"{prefix}{file.relative_to(folder)}")
    return buffer.getvalue()


def test_an_uploaded_zip_becomes_a_data_set_for_training(with_data, tiny_dataset):
    app = open_page("pages/4_Your_own_data.py")
    app.file_uploader[0].set_value(("colours.zip", zip_bytes(tiny_dataset, "colours/"), "application/zip"))
    app = app.run()
    assert_healthy(app)
    assert "2 classes (blue, red), 16 training and 8 validation pictures" in app.success[0].value
    train = open_page("pages/1_Train.py")
    assert "Uploaded: colours" in train.selectbox(key="dataset").options


def test_a_zip_that_escapes_its_folder_is_refused(with_data):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../evil.txt", "x")
    app = open_page("pages/4_Your_own_data.py")
    app.file_uploader[0].set_value(("evil.zip", buffer.getvalue(), "application/zip"))
    app = app.run()
    assert "refusing" in app.error[0].value
    assert not list((with_data / "data/uploads").glob("*"))


def test_a_folder_path_is_checked(with_data, tmp_path):
    app = open_page("pages/4_Your_own_data.py")
    app.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert "does not exist" in app.error[0].value


def test_classify_shows_a_heat_map_and_bundle_downloads_per_model(with_runs):
    app = open_page("pages/3_Classify.py")
    app.file_uploader[0].set_value(("red.png", png_bytes("red"), "image/png"))
    app = app.run()
    assert_healthy(app)
    captions = [picture.caption for image in app.image for picture in image.proto.imgs]
    assert captions[0] == "red.png (64×64)" and captions[1].startswith("Grad-CAM: where finetune saw")
    assert make_buttons(app) == ["Make the ONNX bundle"] and not app.get("download_button")
    [formats] = app.get("button_group")
    assert formats.options == ["ONNX", "PyTorch .pt2", "TorchScript"]  # short enough for a column of Classify


def make_buttons(app: AppTest) -> list[str]:
    return [button.label for button in app.button if button.label.startswith("Make the ")]


def test_a_bundle_is_made_on_request_with_a_spinner_then_offered_for_download(with_runs, tiny_run):
    """The download button made the bundle after the click with no sign of it: 23 s of nothing for ONNX."""
    app = open_page("pages/2_Compare.py")
    app.segmented_control(key=f"compare-format-{tiny_run.id}").set_value("torchscript")
    app = app.run()
    app.button(key=f"compare-make-{tiny_run.id}").click()
    app = app.run(timeout=120)
    assert_healthy(app)
    [download] = app.get("download_button")
    assert download.label.startswith("Download (") and download.label.endswith(" MB)")
    assert not make_buttons(app)  # made: kept across reruns


def test_compare_gallery_shows_heat_maps_on_demand(with_runs):
    app = open_page("pages/2_Compare.py")
    plain = [picture.caption for image in app.image for picture in image.proto.imgs]
    plain_urls = {picture.url for image in app.image for picture in image.proto.imgs}
    app.toggle(key="gallery_heat").set_value(True)
    app = app.run()
    assert_healthy(app)
    assert make_buttons(app) == ["Make the ONNX bundle"]
    with_heat = [image.proto.imgs[0] for image in app.image]
    mistakes = list_runs().runs[0].val_predictions.mistakes  # the first look: every mistake
    assert [picture.caption for picture in with_heat] == plain and len(plain) == mistakes > 0
    assert not plain_urls & {picture.url for picture in with_heat}  # other pictures: the overlays


# ---------------------------------------------------------------- shared mode (STUDIO_SHARED=1)

@pytest.fixture
def shared(app_env, monkeypatch):
    monkeypatch.setenv("STUDIO_SHARED", "1")
    return app_env


def shown_text(app: AppTest) -> str:
    """Everything a visitor can read on the page: text, messages, tables, and the choices of every widget."""
    texts = [e.value for kind in ("title", "subheader", "markdown", "caption", "success", "info", "warning", "error")
             for e in getattr(app, kind)]
    texts += [e.value.to_string() for e in app.dataframe]
    texts += [str(option) for widget in (*app.selectbox, *app.multiselect) for option in widget.options]
    texts += [e.label for e in (*app.text_input, *app.button, *app.file_uploader)]
    texts += [picture.caption for image in app.image for picture in image.proto.imgs]
    return "\n".join(texts)


def assert_no_server_path(app: AppTest, tmp_path_factory) -> None:
    text = shown_text(app)
    for path in (tmp_path_factory.getbasetemp(), PROJECT, Path.home()):
        assert str(path) not in text, text
    assert not re.search(r"(?<![\w.:/])/(tmp|home|root|work|usr|var)\b", text), text


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("state", ["app_env", "with_data", "with_runs"])
def test_shared_mode_shows_no_server_path_on_any_page(page, state, shared, request, tmp_path_factory):
    request.getfixturevalue(state)
    app = open_page(page)
    assert_healthy(app)
    assert_no_server_path(app, tmp_path_factory)


def test_shared_mode_has_no_folder_tab_no_folder_input_and_no_paths_on_home(shared, with_data, tmp_path_factory):
    own_data = open_page("pages/4_Your_own_data.py")
    assert [tab.label for tab in own_data.tabs] == [] and not own_data.text_input
    assert own_data.file_uploader[0].label.startswith("Zip file with train/ and val/")
    train = open_page("pages/1_Train.py")
    assert train.selectbox(key="dataset").options == ["Tutorial: ants and bees (hymenoptera_data)"]
    assert not train.text_input and any("Limits on this studio: at most 25 epochs" in c.value for c in train.caption)
    home = open_page("streamlit_app.py")
    assert home.success[0].value.startswith("Found: 2 classes, 16 training and 8 validation pictures")
    text = shown_text(home)
    assert "ResNet-18**: local file" in text and "resnet18.pth" not in text and "saved run(s)." in text
    assert_no_server_path(home, tmp_path_factory)


def test_outside_shared_mode_the_folder_tab_and_paths_stay(with_data):
    own_data = open_page("pages/4_Your_own_data.py")
    assert [tab.label for tab in own_data.tabs] == ["A folder on this machine", "Upload a zip"]
    assert "Another folder..." in open_page("pages/1_Train.py").selectbox(key="dataset").options
    assert "Found at `" in open_page("streamlit_app.py").success[0].value


def upload_colours(app: AppTest, tiny_dataset: Path) -> AppTest:
    app.file_uploader[0].set_value(("colours.zip", zip_bytes(tiny_dataset, "colours/"), "application/zip"))
    return app.run()


def test_shared_mode_keeps_uploads_per_session(shared, with_data, tiny_dataset, tmp_path_factory):
    alice = open_page("streamlit_app.py").switch_page("pages/4_Your_own_data.py").run()  # one session, page to page
    alice = upload_colours(alice, tiny_dataset)
    assert_healthy(alice)
    assert alice.success[0].value.startswith("`colours`: 2 classes (blue, red), 16 training and 8 validation")
    assert_no_server_path(alice, tmp_path_factory)
    uploads = with_data / "data/uploads"
    folder = uploads / ".sessions" / alice.session_state["visitor"] / "colours"
    assert scan_dataset(folder).counts()["val"] == {"blue": 4, "red": 4}
    assert [p.name for p in uploads.iterdir()] == [".sessions"]  # nothing in the folder every session lists
    alice.switch_page("pages/1_Train.py").run()
    assert alice.selectbox(key="dataset").options[-1] == "Uploaded: colours"
    bob = open_page("pages/1_Train.py")
    assert bob.selectbox(key="dataset").options == ["Tutorial: ants and bees (hymenoptera_data)"]
    assert bob.session_state["visitor"] != alice.session_state["visitor"]


def test_shared_mode_refuses_an_upload_past_the_quota(shared, with_data, tiny_dataset, monkeypatch):
    size = sum(p.stat().st_size for p in tiny_dataset.rglob("*") if p.is_file())
    monkeypatch.setenv("STUDIO_UPLOAD_QUOTA_MB", str(1.5 * size / 2**20))
    assert_healthy(upload_colours(open_page("pages/4_Your_own_data.py"), tiny_dataset))
    bob = upload_colours(open_page("pages/4_Your_own_data.py"), tiny_dataset)
    assert_healthy(bob)
    error = bob.error[0].value
    assert error.startswith("colours.zip unpacks to 0.") and "but uploads already take 0." in error
    assert "allowed for all uploads together. Upload a smaller zip." in error and not bob.success
    assert not (with_data / "data/uploads/.sessions" / bob.session_state["visitor"] / "colours").exists()


def test_shared_mode_caps_epochs_and_refuses_a_data_set_past_the_pictures_limit(shared, with_data, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_EPOCHS", "3")
    monkeypatch.setenv("STUDIO_MAX_PICTURES", "20")  # the tiny set has 24
    app = open_page("pages/1_Train.py")
    assert app.number_input(key="epochs").max == 3 and app.number_input(key="epochs").value == 3
    app.number_input(key="epochs").set_value(5)
    assert app.run().number_input(key="epochs").value == 3
    app = app.button(key="start").click().run()
    assert app.error[0].value == ("The data set has more than 20 pictures in train/, val/ and test/; this studio "
                                  "trains on at most 20. Choose a smaller data set.")
    assert state.training_jobs().snapshot() is None  # the epochs limit itself is refused in tests/test_jobs.py


def test_shared_mode_lets_only_the_starting_session_cancel(shared, with_data, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_EPOCHS", "0")  # no limit: the job must still run when the other tab looks
    alice = start_training(open_page("pages/1_Train.py"), epochs=400)
    assert_healthy(alice)
    deadline = time.time() + 60
    while not state.training_jobs().snapshot().scenarios[0].history and time.time() < deadline:
        time.sleep(0.2)
    bob = open_page("pages/1_Train.py")
    assert not [b for b in bob.button if b.label == "Cancel"]
    assert "Started by another visitor; only they can cancel it." in [c.value for c in bob.caption]
    alice = alice.run()
    alice.button(key="cancel").click().run()
    job = state.training_jobs().wait(60)
    assert job.state == "cancelled" and not job.time_limited


def test_shared_mode_stops_a_job_at_the_time_limit_and_says_so(shared, with_data, monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_MINUTES", "0.05")
    app = open_page("pages/1_Train.py")
    app.selectbox(key="backbone").set_value("mobilenet_v2")
    app.multiselect(key="scenarios").set_value(["finetune", "frozen"])  # 25 epochs of finetune take longer
    app.button(key="start").click().run()
    job = state.training_jobs().wait(60)
    assert job.state == "cancelled" and job.time_limited
    assert [scenario.status for scenario in job.scenarios] == ["cancelled", "skipped"]
    warning = open_page("pages/1_Train.py").warning[0].value
    assert warning.startswith(f"Job {job.job_id} reached its time limit (3 s); what it had trained was saved")
    assert list_runs().runs[0].status == "cancelled"


def test_shared_mode_names_data_sets_instead_of_their_folders(shared, with_data):
    app = open_page("pages/1_Train.py")  # a session, to read its settings and folders
    assert_healthy(app)
    data_set = with_data / "data/hymenoptera_data"
    message = (f"the folder {data_set} does not exist. {data_set}/train/x.jpg; runs in {with_data / 'runs'}/a. "
               "See https://download.pytorch.org/tutorial/hymenoptera_data.zip: train/ and val/, epoch 1/25, "
               "'/etc/passwd' (/srv/x.)")
    assert widgets.private(message) == (
        "the folder hymenoptera_data does not exist. hymenoptera_data/train/x.jpg; runs in the runs folder/a. "
        "See https://download.pytorch.org/tutorial/hymenoptera_data.zip: train/ and val/, epoch 1/25, "
        "'[server path]' ([server path].)")


def test_shared_mode_offers_only_the_runs_of_this_visitors_data_sets(with_runs, tiny_run, monkeypatch):
    # the same run, trained on another visitor's upload
    copy_run(tiny_run, with_runs / "runs", f"{tiny_run.id[:-4]}beef",
             dataset={"path": str(with_runs / "data/uploads/.sessions/someone/colours")})
    assert len(open_page("pages/2_Compare.py").multiselect[0].options) == 2
    monkeypatch.setenv("STUDIO_SHARED", "1")
    st.cache_resource.clear()
    for page in ("pages/2_Compare.py", "pages/3_Classify.py"):
        assert open_page(page).multiselect[0].options == [run_label(tiny_run)]


def test_settings_are_read_from_the_environment():
    assert read_settings({}) == Settings()
    shared = read_settings({"STUDIO_SHARED": "1", "STUDIO_MAX_MINUTES": "0.5", "STUDIO_MAX_PICTURES": "0"})
    assert shared.shared and shared.upload_quota_mb == 2048 and shared.upload_quota_bytes == 2048 * 2**20
    assert shared.limits == JobLimits(max_epochs=25, max_pictures=None, max_minutes=0.5)
    assert read_settings({"STUDIO_MAX_EPOCHS": "3"}).limits == JobLimits(max_epochs=3)  # a limit on its own
    with pytest.raises(ConfigError, match="STUDIO_MAX_EPOCHS must be a whole number, 0 for no limit"):
        read_settings({"STUDIO_MAX_EPOCHS": "lots"})


def test_the_loaded_models_are_bounded_by_their_memory(with_runs, tiny_run, monkeypatch):
    """Several large backbones opened one after another were all kept: 8 models, whatever their size."""
    other = read_run(copy_run(tiny_run, with_runs / "runs", tiny_run.id[:-4] + "copy"))
    size = state.model_bytes(core.predict.load_predictor(tiny_run))
    assert read_settings({"STUDIO_MODEL_MEMORY_MB": "100"}).model_memory_bytes == 100 * 2**20
    for budget, kept in ((1.5 * size, 1), (0.5 * size, 0), (2.5 * size, 2)):
        monkeypatch.setattr(state, "settings", lambda budget=budget: Settings(model_memory_mb=budget / 2**20))
        state.loaded_models.clear()
        first = state.predictor(tiny_run)
        second = state.predictor(other)
        models, _ = state.loaded_models()
        assert len(models) == kept and models.currsize <= budget
        assert (state.predictor(other) is second) == (kept >= 1)  # the most recently used stays
        assert (state.predictor(tiny_run) is first) == (kept == 2)
    state.loaded_models.clear()


def test_a_run_with_no_finished_epoch_is_never_chosen_nor_offered_for_download(with_runs, tiny_run):
    untrained = copy_run(tiny_run, with_runs / "runs", "20990101-000000-frozen-mobilenet_v2-0ep0", **UNTRAINED,
                         created="2099-01-01T00:00:00+00:00")
    app = open_page("pages/2_Compare.py")
    assert app.multiselect[0].value == [tiny_run.id]  # the newest run, but not a default
    app.multiselect[0].set_value([tiny_run.id, untrained.name])
    app = app.run()
    assert_healthy(app)
    assert make_buttons(app) == ["Make the ONNX bundle"]  # the trained run's, none for the untrained one
    assert any("no model to take away" in caption.value for caption in app.caption)
    label = run_label(next(run for run in list_runs().runs if run.id == untrained.name))
    assert label.endswith("no epoch finished (cancelled)")
    classify = open_page("pages/3_Classify.py")
    assert classify.multiselect[0].value == [tiny_run.id]
    assert len(classify.multiselect[0].options) == 1  # the untrained run is not even offered


def test_defaults_come_from_one_data_set_and_labels_name_it(with_runs, tiny_run):
    other = copy_run(tiny_run, with_runs / "runs", "20990101-000000-frozen-mobilenet_v2-abc3",
                     config={"scenario": "frozen"}, created="2099-01-01T00:00:00+00:00",
                     dataset={"path": "/elsewhere/abc"})
    for page in ("pages/2_Compare.py", "pages/3_Classify.py"):
        app = open_page(page)
        assert app.multiselect[0].value == [other.name], page  # the newest data set's runs only
        best = accuracy_text(tiny_run.best_val())  # with its 95% interval: "0.750 [0.409, 0.929]"
        assert sorted(app.multiselect[0].options) == sorted([
            f"finetune · mobilenet_v2 · colours · {tiny_run.created.replace('T', ' ')[:16]} · best {best}",
            f"frozen · mobilenet_v2 · abc · 2099-01-01 00:00 · best {best}"])


def compare_with_a_twin(with_runs, tiny_run) -> AppTest:
    """Compare showing tiny_run beside a copy of it saved in the same minute, id ending in "beef"."""
    twin = copy_run(tiny_run, with_runs / "runs", tiny_run.id[:-4] + "beef").name
    app = open_page("pages/2_Compare.py")
    app.multiselect[0].set_value([tiny_run.id, twin])
    app = app.run()
    assert_healthy(app)
    return app


def test_compare_tells_apart_two_runs_of_one_scenario_and_minute(with_runs, tiny_run):
    app = compare_with_a_twin(with_runs, tiny_run)  # charts of identical runs collided: StreamlitDuplicateElementId
    names = [row for row in app.dataframe[0].value["run"]]
    assert len(set(names)) == 2 and names[1].endswith("· beef")


def test_a_refused_zip_is_named_by_its_own_file_name(with_data):
    app = open_page("pages/4_Your_own_data.py")
    app.file_uploader[0].set_value(("my holiday set.zip", b"not a zip at all", "application/zip"))
    app = app.run()
    assert "my holiday set.zip" in app.error[0].value and "upload.zip" not in app.error[0].value


def test_the_same_zip_twice_says_it_was_saved_under_another_name(with_data, tiny_dataset):
    data = zip_bytes(tiny_dataset, "colours/")
    first = open_page("pages/4_Your_own_data.py")
    first.file_uploader[0].set_value(("colours.zip", data, "application/zip"))
    assert not first.run().info
    second = open_page("pages/4_Your_own_data.py")
    second.file_uploader[0].set_value(("colours.zip", data, "application/zip"))
    second = second.run()
    assert "already here, so this upload was saved as 'colours-2'" in second.info[0].value


def test_another_folder_without_a_path_says_what_to_type(with_data):
    app = open_page("pages/1_Train.py")
    app.selectbox(key="dataset").set_value("Another folder...")
    app = app.button(key="start").click().run()
    assert "Type the folder's path in 'Folder with train/ and val/'" in app.error[0].value
    assert ". cannot be used" not in app.error[0].value and state.training_jobs().snapshot() is None


def test_classify_names_a_file_of_another_type_and_lists_the_accepted_ones(with_runs):
    app = open_page("pages/3_Classify.py")
    app.file_uploader[0].set_value(("report.pdf", b"%PDF-1.4 not a picture", "application/pdf"))
    app = app.run()
    assert "report.pdf is not a picture" in app.error[0].value and "jpg, jpeg, png" in app.error[0].value


# ---------------------------------------------------------------- Compare: charts and gallery after the review

def untrained_copy(runs_dir: Path, tiny_run) -> str:
    """A copy of tiny_run stopped before its first epoch finished; returns its id."""
    return copy_run(tiny_run, runs_dir, "20990101-000000-finetune-mobilenet_v2-0ep0", **UNTRAINED,
                    created="2099-01-01T00:00:00+00:00").name


def plotly_figures(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def test_compare_says_nothing_to_chart_for_a_run_with_no_finished_epoch(with_runs, tiny_run):
    untrained = untrained_copy(with_runs / "runs", tiny_run)
    app = open_page("pages/2_Compare.py")
    app.multiselect[0].set_value([tiny_run.id, untrained])
    app = app.run()
    assert_healthy(app)
    label = widgets.short_labels([run for run in list_runs().runs if run.id in (tiny_run.id, untrained)])[untrained]
    figures = plotly_figures(app)
    assert len(figures) == 7  # layer rates, two overlays, one history, time, parameters, one confusion matrix
    for figure in figures:
        title = figure["layout"].get("title", {}).get("text", "")
        assert label not in title and all(trace.get("name") != label for trace in figure["data"]), title
    assert not [chart for chart in app.get("plotly_chart") if untrained in chart.proto.id]
    nothing = [info.value for info in app.info if "no epoch finished: nothing to chart" in info.value]
    assert nothing == [f"{label}: no epoch finished: nothing to chart."] * 2  # history and confusion matrix
    assert any("Left out of the charts (no epoch finished: nothing to chart)" in c.value for c in app.caption)


def test_compare_charts_keep_the_toolbar_to_hover_and_titles_left(with_runs):
    app = open_page("pages/2_Compare.py")
    charts_made = app.get("plotly_chart")
    assert len(charts_made) == 7  # the layer rates (in an expander) among them
    for chart in charts_made:
        assert json.loads(chart.proto.config)["displayModeBar"] == "hover"
        layout = json.loads(chart.proto.spec)["layout"]
        assert layout["title"]["x"] == 0 and layout["title"]["xanchor"] == "left" and layout["margin"]["t"] >= 36


def test_compare_gallery_is_collapsed_after_the_first_run_and_wraps_small_pictures(with_runs, tiny_run):
    app = compare_with_a_twin(with_runs, tiny_run)
    galleries = [e for e in app.expander if e.label.startswith("Pictures of")]
    assert [e.proto.expanded for e in galleries] == [True, False]  # a phone scrolls past one run's pictures
    for gallery in galleries:  # small pictures in a row that wraps, not six columns stacked on a phone
        rows = [block.proto.flex_container for block in gallery.container if block.type == "flex_container"]
        assert [(row.direction, row.wrap) for row in rows] == [(2, True)]  # horizontal
        assert len(gallery.image) == tiny_run.val_predictions.mistakes and not gallery.columns


def test_compare_gallery_shows_every_picture_a_page_at_a_time(with_runs, tiny_run, monkeypatch):
    monkeypatch.setattr(charts, "GALLERY_PAGE", 3)
    app = open_page("pages/2_Compare.py")
    mistakes = tiny_run.val_predictions.mistakes
    assert len(app.image) == mistakes and not app.number_input  # every mistake first, even past a page
    assert any(caption.value.startswith("Every mistake is shown; the other") for caption in app.caption)
    app.toggle(key="gallery_all").set_value(True)
    app = app.run()
    assert_healthy(app)
    page = app.number_input(key=f"page-{tiny_run.id}")
    assert (page.value, page.min, page.max, page.label) == (1, 1, 3, "Page (of 3)") and len(app.image) == 3
    first = [picture.caption for image in app.image for picture in image.proto.imgs]
    page.set_value(3)
    app = app.run()
    assert_healthy(app)
    last = [picture.caption for image in app.image for picture in image.proto.imgs]
    assert len(last) == 2  # 8 pictures: 3, 3 and 2
    assert sum(caption.startswith("❌") for caption in first + last) == min(mistakes, 3) + max(mistakes - 6, 0)


def test_the_train_form_keeps_its_choices_and_shows_a_running_jobs_settings(with_data, monkeypatch):
    app = open_page("streamlit_app.py").switch_page("pages/1_Train.py").run()
    app.selectbox(key="backbone").set_value("mobilenet_v2")
    app.multiselect(key="scenarios").set_value(["frozen"])
    app.number_input(key="epochs").set_value(50)
    app.button(key="start").click().run()
    assert app.query_params["backbone"] in ("mobilenet_v2", ["mobilenet_v2"])  # kept in the address for a reload
    assert app.query_params["epochs"] in ("50", ["50"])
    back = app.switch_page("pages/2_Compare.py").run().switch_page("pages/1_Train.py").run()  # same session
    assert back.selectbox(key="backbone").value == "mobilenet_v2" and back.number_input(key="epochs").value == 50
    other_tab = open_page("pages/1_Train.py")  # another session, while the job runs: that job's settings
    assert state.training_jobs().snapshot().running
    assert other_tab.selectbox(key="backbone").value == "mobilenet_v2"
    assert other_tab.multiselect(key="scenarios").value == ["frozen"]
    assert other_tab.number_input(key="epochs").value == 50


def bands(figure: dict) -> list[dict]:
    """The shaded 95% bands of a figure (charts.add_band): traces filled down to the trace before them."""
    return [trace for trace in figure["data"] if trace.get("fill") == "tonexty"]


def start_experiment(app: AppTest, **choices) -> AppTest:
    for key, value in {"experiment_backbones": ["mobilenet_v2"], "experiment_scenarios": ["frozen", "scratch"],
                       "experiment_seeds": 2, "experiment_epochs": 1, "experiment_sizes": [1, None],
                       **choices}.items():
        widget = app.multiselect(key=key) if key.endswith(("backbones", "scenarios", "sizes")) else \
            app.number_input(key=key)
        widget.set_value(value)
        app = app.run()
    return app


def test_recipes_are_a_dimension_of_an_experiments_grid(with_data):
    app = open_page("pages/5_Experiments.py")
    app.multiselect(key="experiment_scenarios").set_value(["frozen", "finetune"])
    app.multiselect(key="experiment_recipes").set_value(["tutorial", "lp-ft"])
    app = app.multiselect(key="experiment_sizes").set_value([None]).run()
    assert_healthy(app)
    estimate = next(info.value for info in app.info if info.value.startswith("Experiment"))
    assert "15 cells (3 scenario-recipe pairs × 5 seeds × 1 size)" in estimate and "tutorial-lp-ft" in estimate
    app = app.multiselect(key="experiment_scenarios").set_value(["frozen"]).run()
    assert "The lp-ft recipe trains the backbone after its probe" in app.error[0].value
    assert app.button(key="start_experiment").disabled


def test_an_experiment_of_two_seeds_shows_its_means_and_says_why_they_have_no_interval(with_data):
    """A t interval over 2 seeds read "0.817 [0.000, 1.000]" and its bands filled the charts."""
    app = start_experiment(open_page("pages/5_Experiments.py"))
    assert_healthy(app)
    estimate = next(info.value for info in app.info if info.value.startswith("Experiment"))
    assert "8 cells (2 scenarios × 2 seeds × 2 sizes); 0 saved already, 8 to train: about" in estimate
    app = app.button(key="start_experiment").click().run()
    assert_healthy(app)
    job = state.training_jobs().wait(300)
    assert job.state == "completed" and job.experiment and len(job.scenarios) == 8, job.message
    assert {s.label for s in job.scenarios} >= {"frozen · seed 0 · 1 per class", "scratch · seed 1 · all per class"}
    app = app.run()
    assert_healthy(app)
    by_size, accuracy, loss = plotly_figures(app)
    assert by_size["layout"]["xaxis"]["type"] == "log"
    assert {trace["name"] for trace in by_size["data"] if trace.get("name")} == {"frozen", "scratch"}
    assert not bands(by_size) and not bands(accuracy) and not bands(loss)
    assert "an interval needs 3" in [t for t in by_size["data"] if t.get("name") == "frozen"][0]["hovertemplate"]
    table = app.dataframe[-1].value
    assert list(table["seeds"]) == [2, 2, 2, 2]
    assert table["best val acc (optimistic)"].str.fullmatch(r"[01]\.\d{3} \[2 seeds: an interval needs 3\]").all()
    assert any("fewer than 3 seeds" in info.value and "paired verdicts below" in info.value for info in app.info)
    assert any("per class: " in m.value and ("is ahead of" in m.value or "not distinguishable with 8 validation "
                                              "pictures and 2 seeds" in m.value) for m in app.markdown)
    again = open_page("pages/5_Experiments.py")  # the same grid again: every cell is saved, nothing to train
    again = start_experiment(again)
    assert "8 saved already, nothing to train" in next(i.value for i in again.info if i.value.startswith("Experiment"))
    again = again.button(key="start_experiment").click().run()
    assert "is saved already" in again.error[0].value and len(list_runs().runs) == 8


def test_backbones_compared_in_an_experiment_show_their_trade_offs(with_data):
    app = start_experiment(open_page("pages/5_Experiments.py"), experiment_backbones=["mobilenet_v2", "resnet18"],
                           experiment_scenarios=["frozen"], experiment_seeds=3, experiment_sizes=[None])
    assert_healthy(app)
    estimate = next(info.value for info in app.info if info.value.startswith("Experiment"))
    assert "6 cells (2 backbone-scenarios × 3 seeds × 1 size)" in estimate and "each backbone" in estimate
    app = app.button(key="start_experiment").click().run()
    job = state.training_jobs().wait(300)
    assert job.state == "completed" and len(job.scenarios) == 6, job.message
    assert "resnet18 · frozen · seed 2 · all per class" in {s.label for s in job.scenarios}
    app = app.run()
    assert_healthy(app)
    by_size, by_seconds, by_parameters = plotly_figures(app)[:3]
    assert {t["name"] for t in by_size["data"] if t.get("name")} == {"mobilenet_v2 · frozen", "resnet18 · frozen"}
    for figure, cost in ((by_seconds, "time per run"), (by_parameters, "parameters")):
        assert cost in figure["layout"]["title"]["text"] and figure["layout"]["xaxis"]["type"] == "log"
        points = [t for t in figure["data"] if t["name"] != "best trade-offs"]
        assert len(points) == 2 and all(t["error_y"]["visible"] for t in points)  # 3 seeds: intervals
        assert any(t["name"] == "best trade-offs" for t in figure["data"])
    assert sorted(t["x"][0] for t in by_parameters["data"] if t["name"] != "best trade-offs") == [2_226_434,
                                                                                                  11_177_538]
    assert list(app.dataframe[-1].value["params (M)"]) == ["2.2", "11.2"]
    assert any("mobilenet_v2 · frozen" in m.value and "resnet18 · frozen" in m.value for m in app.markdown)


def test_the_backbones_to_compare_are_chosen_one_by_one_not_all_eighty_at_once(with_data):
    """Each backbone chosen is timed for the estimate and trained: a "Select all" would take the whole catalogue
    (ViT-H/14 included) in one click."""
    backbones = open_page("pages/5_Experiments.py").multiselect(key="experiment_backbones")
    assert len(backbones.options) >= 80 and backbones.proto.select_all == 0


def test_compare_draws_repeats_of_one_recipe_as_a_band(with_runs, tiny_run):
    repeats = [copy_run(tiny_run, with_runs / "runs", tiny_run.id[:-4] + f"see{seed}", config={"seed": seed}).name
               for seed in (1, 2)]
    app = open_page("pages/2_Compare.py")
    app.multiselect[0].set_value([tiny_run.id, *repeats])
    app = app.run()
    assert_healthy(app)
    accuracy, loss = plotly_figures(app)[:2]
    assert len(bands(accuracy)) == 1 and len(bands(loss)) == 1
    assert any("mean of 3 runs" in trace.get("name", "") for trace in accuracy["data"])
    app.multiselect[0].set_value([tiny_run.id, repeats[0]])  # two seeds: the mean, and no band
    accuracy = plotly_figures(app.run())[0]
    assert not bands(accuracy) and any("mean of 2 runs" in trace.get("name", "") for trace in accuracy["data"])
    twin = compare_with_a_twin(with_runs, tiny_run)  # the same seed twice is not a repeat: two lines, no band
    assert not bands(plotly_figures(twin)[0])


# ---------------------------------------------------------------- why a model is wrong, and the data's health

def test_compare_shows_per_class_metrics_and_a_confusion_cells_pictures(with_runs, tiny_run):
    app = open_page("pages/2_Compare.py")
    table = app.dataframe[1].value
    expected = class_metrics(tiny_run.val_predictions, tiny_run.class_names)
    assert list(table["class"]) == tiny_run.class_names
    assert list(table["recall"]) == [round(m.recall, 3) for m in expected]
    assert list(table["pictures"]) == [4, 4]
    cell = app.selectbox(key=f"cell-{tiny_run.id}")
    counts = tiny_run.val_predictions.confusion(2)
    assert cell.value is None and cell.options[1] == f"blue predicted as red ({counts[0][1]})"
    before = len(app.image)
    app = cell.set_value((0, 0)).run()  # what a click on the cell sets
    assert_healthy(app)
    assert len(app.image) == before + counts[0][0]


def two_runs_that_disagree(with_runs, tiny_run) -> str:
    """A copy of the tiny run whose saved predictions are all right: it parts from the tiny run on its mistakes."""
    perfect = dict(tiny_run.val_predictions.__dict__, predictions=list(tiny_run.val_predictions.labels))
    copy_run(tiny_run, with_runs / "runs", "20991231-000000-frozen-mobilenet_v2-feed", val_predictions=perfect,
             created="2099-12-31T00:00:00+00:00")
    return "20991231-000000-frozen-mobilenet_v2-feed"


def test_mistakes_shows_worst_mistakes_disagreements_and_feature_maps(with_runs, tiny_run):
    twin = two_runs_that_disagree(with_runs, tiny_run)
    app = open_page("pages/6_Mistakes.py")
    app = app.multiselect(key="runs").set_value([tiny_run.id, twin]).run()
    assert_healthy(app)
    text = " ".join(m.value for m in app.markdown)
    mistakes = tiny_run.val_predictions.mistakes
    assert "alone is right on 0" in text and f"alone on {mistakes}" in text
    assert any("McNemar" in c.value for c in app.caption)
    assert (with_runs / "runs" / tiny_run.id / "outputs-val.pt").is_file()  # kept: no second pass of the model
    captions = [picture.caption for image in app.image for picture in image.proto.imgs]
    assert len(captions) == 2 * 6 + mistakes  # 6 worst per run, then the disagreements
    # The maps are drawn when asked for: the first visit computes no ImageNet feature
    assert app.toggle(key="draw_maps").value is False and not app.get("plotly_chart")
    assert any(c.value.startswith("Turn on 'Draw the feature maps'") for c in app.caption)
    app = app.toggle(key="draw_maps").set_value(True).run()
    assert_healthy(app)
    assert len(app.get("plotly_chart")) == 3  # the untouched ImageNet backbone, then each run
    app = app.radio(key="map_method").set_value("tsne").run()
    assert_healthy(app)
    assert open_page("pages/6_Mistakes.py").toggle(key="draw_maps").value is True  # kept: drawn at once next time


def test_the_untouched_map_computes_the_validation_pictures_only_or_takes_the_health_checks(with_runs, tiny_run,
                                                                                         random_weights_dir):
    """Mistakes computed ImageNet features of every picture, train included, to map the validation ones."""
    scan = scan_dataset(tiny_run.dataset.root)
    files = tiny_run.val_predictions.files
    computed = []
    mine = reference_features(scan, files, with_runs / "runs", "mobilenet_v2",
                              progress=lambda done, total: computed.append(total))
    assert mine.files == files and set(computed) == {len(files)} and len(scan.samples["train"]) > 0
    whole = dataset_features(scan, with_runs / "runs", "mobilenet_v2")  # as the health check leaves them
    taken = reference_features(scan, files, with_runs / "runs", "mobilenet_v2",
                               progress=lambda *_: pytest.fail("computed again"))
    assert taken.files == files
    assert np.allclose(taken.features, whole.features[whole.rows(files)])


def test_a_clicked_point_says_its_class_each_models_answer_and_its_map(with_runs, tiny_run):
    twin = two_runs_that_disagree(with_runs, tiny_run)
    app = open_page("pages/6_Mistakes.py")
    app = app.multiselect(key="runs").set_value([tiny_run.id, twin]).run()
    app = app.toggle(key="draw_maps").set_value(True).run()
    wrong = next(p for p in tiny_run.val_pictures() if not p.correct)
    file = wrong.path.relative_to(tiny_run.dataset.root).as_posix()
    shown = next(run for run in list_runs().runs if run.id == tiny_run.id)  # the copy in the app's runs folder
    app.session_state["map_picture"] = ("finetune · 000e", str(shown.path), file)
    app = app.run()
    assert_healthy(app)
    text = " ".join(m.value for m in app.markdown)
    names = tiny_run.class_names
    assert f"`{file}`, from the map *finetune · 000e*. It is **{names[wrong.label]}**" in text, text
    answers = re.findall(r"- finetune · [\d-]+ [\d:]+: (✅|❌) (\w+) \(\d+%\)", text)
    assert len(answers) == 2 and answers[0] == ("❌", names[wrong.predicted]), text  # the tiny run's, then its twin's
    app = app.radio(key="map_method").set_value("tsne").run()  # another projection: the point is cleared
    assert "map_picture" not in app.session_state and "Chosen point" not in " ".join(m.value for m in app.markdown)


def with_planted_duplicate(app_env, tiny_dataset) -> Path:
    folder = app_env / "data/hymenoptera_data"
    shutil.copytree(tiny_dataset, folder)
    shutil.copy(folder / "train/red/red_0.jpg", folder / "val/red/copy_of_red_0.jpg")
    return folder


def test_home_checks_the_datas_health_and_keeps_an_exclusion_list(app_env, tiny_dataset):
    folder = with_planted_duplicate(app_env, tiny_dataset)
    app = open_page("streamlit_app.py")
    assert not app.metric  # not checked yet: a button
    app = next(b for b in app.button if b.label == "Check the data's health").click().run()
    assert_healthy(app)
    numbers = {metric.label: metric.value for metric in app.metric}
    assert numbers["Exact duplicates"] == "1" and numbers["Pictures"] == "25"
    assert any("Exact duplicates" in m.value and "1 across splits" in m.value for m in app.markdown)
    assert any("fewer than 10 pictures" in w.value for w in app.warning)
    app = open_page("streamlit_app.py")  # kept: shown at once
    assert {metric.label: metric.value for metric in app.metric}["Exact duplicates"] == "1"
    chosen = app.multiselect(key="excluded-tutorial")
    assert "val/red/copy_of_red_0.jpg" in chosen.options
    chosen.set_value(["val/red/copy_of_red_0.jpg"])
    app = next(b for b in app.button if b.label == "Save the exclusion list").click().run()
    assert_healthy(app)
    assert read_exclusions(folder, app_env / "runs") == ["val/red/copy_of_red_0.jpg"]
    assert (folder / "val/red/copy_of_red_0.jpg").is_file()  # the user's file stays


def test_training_leaves_out_the_exclusion_list_unless_unticked(app_env, tiny_dataset):
    folder = with_planted_duplicate(app_env, tiny_dataset)
    write_exclusions(folder, ["val/red/copy_of_red_0.jpg"], app_env / "runs")
    app = open_page("pages/1_Train.py")
    assert app.checkbox(key="leave_out").value is True
    app = start_training(app, epochs=1)
    assert any("1 picture(s)" in i.value for i in app.info)
    job = state.training_jobs().wait(120)
    assert job.state == "completed", job.message
    runs = {run.id: run for run in list_runs().runs}
    run = runs[job.scenarios[0].run_id]
    assert run.dataset.excluded == ["val/red/copy_of_red_0.jpg"] and run.dataset.total("val") == 8
    app = open_page("pages/1_Train.py")
    app.checkbox(key="leave_out").uncheck()
    start_training(app, epochs=1)
    job = state.training_jobs().wait(120)
    assert job.state == "completed", job.message
    kept = {run.id: run for run in list_runs().runs}[job.scenarios[0].run_id]  # runs of one second: not by order
    assert kept.dataset.excluded == [] and kept.dataset.total("val") == 9


def test_your_own_data_offers_the_health_check_of_the_folder(with_data, tiny_dataset):
    app = open_page("pages/4_Your_own_data.py")
    app = app.text_input[0].input(str(tiny_dataset)).run()
    assert_healthy(app)
    app = next(b for b in app.button if b.label == "Check the data's health").click().run()
    assert_healthy(app)
    assert {metric.label: metric.value for metric in app.metric}["Exact duplicates"] == "0"


def test_shared_mode_says_why_an_imagenet_map_is_missing_without_a_server_path(shared, with_runs, monkeypatch,
                                                                               network_attempts, tmp_path_factory):
    (with_runs / "no-weights").mkdir()
    monkeypatch.setenv("STUDIO_WEIGHTS", str(with_runs / "no-weights"))  # the runs load; ImageNet's weights cannot
    app = open_page("pages/6_Mistakes.py").toggle(key="draw_maps").set_value(True).run()
    assert_healthy(app)
    assert any(c.value.startswith("No map of the untouched MobileNetV2") for c in app.caption)
    assert_no_server_path(app, tmp_path_factory)


def test_a_run_trained_elsewhere_on_several_gpus_is_an_ordinary_run_on_every_page(with_runs, tiny_run):
    placement = {"hosts": ["gpu-a", "gpu-a", "gpu-b", "gpu-b"], "devices": ["cuda:0 (NVIDIA H100)",
                 "cuda:1 (NVIDIA H100)"] * 2, "backend": "nccl", "per_process_batch": 1,
                 "lr_scaling": "not scaled: the batch of 4 is the global batch", "interruption": None}
    elsewhere = copy_run(tiny_run, with_runs / "runs", "20990101-000000-finetune-mobilenet_v2-d1d1",
                         placement=placement, dataset={"path": "/srv/cluster/colours"},
                         created="2099-01-01T00:00:00+00:00").name
    compare = open_page("pages/2_Compare.py")
    assert_healthy(compare)
    assert compare.multiselect[0].value == [elsewhere]  # the latest run, its pictures elsewhere
    assert list(compare.dataframe[0].value["trained on"]) == ["4 processes · 2 hosts · 4 × cuda (nccl)"]
    text = shown_text(compare)
    assert "process 3: gpu-b, cuda:1 (NVIDIA H100)" in text and "/srv/cluster/colours, is not on this machine" in text
    assert_healthy(open_page("pages/6_Mistakes.py"))
    classify = open_page("pages/3_Classify.py")
    classify.file_uploader[0].set_value(("red.png", png_bytes("red"), "image/png"))
    classify = classify.run()
    assert_healthy(classify)
    assert classify.metric[0].value in ("red", "blue")
