"""Every dashboard page through streamlit.testing: no data, data without runs, finished runs, a live job."""
import io
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import core.predict
from core.runs import list_runs
from dashboard import state, widgets
from tests.conftest import make_picture

PROJECT = Path(__file__).resolve().parents[1]
PAGES = ["streamlit_app.py", "pages/1_Train.py", "pages/2_Compare.py", "pages/3_Classify.py",
         "pages/4_Your_own_data.py"]


@pytest.fixture
def app_env(tmp_path, monkeypatch, random_weights_dir):
    """Empty data root and runs folder for the app; caches and the job manager start fresh."""
    monkeypatch.setenv("STUDIO_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDIO_WEIGHTS", str(random_weights_dir))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield tmp_path
    state.training_jobs().cancel()
    state.training_jobs().wait(60)
    st.cache_resource.clear()


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
    assert "ResNet-18" in text and "resnet18-f37072fd.pth" in text and "CPU" in text


def test_train_page_defaults_to_the_tutorial(with_data):
    app = open_page("pages/1_Train.py")
    assert app.multiselect(key="scenarios").value == ["finetune", "frozen"]
    keys = ("epochs", "batch_size", "lr", "momentum", "step_size", "gamma")
    recipe = {key: app.number_input(key=key).value for key in keys}
    assert recipe == {"epochs": 25, "batch_size": 4, "lr": 0.001, "momentum": 0.9, "step_size": 7, "gamma": 0.1}
    assert app.selectbox(key="dataset").value.startswith("Tutorial")
    assert app.selectbox(key="backbone").value == "resnet18"
    assert "No training yet" in app.info[0].value


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


def test_a_failed_job_says_what_to_do_in_the_pages_terms(with_data, monkeypatch, network_attempts):
    monkeypatch.delenv("STUDIO_WEIGHTS")  # ResNet-18's ImageNet weights are nowhere here, and the network is closed
    app = open_page("pages/1_Train.py")
    app.multiselect(key="scenarios").set_value(["frozen"])
    app.number_input(key="epochs").set_value(1)
    app.button(key="start").click().run()
    job = state.training_jobs().wait(120)
    assert job.state == "failed" and job.setting == "weights"
    error = open_page("pages/1_Train.py").error[0].value
    assert "Could not download" in error and "The app reads STUDIO_WEIGHTS when it starts" in error
    assert "--weights" not in error  # no command-line flags on a web page


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


def test_classify_refuses_a_photo_over_the_size_limit(with_runs, monkeypatch):
    monkeypatch.setattr(widgets, "MAX_PHOTO_MB", 0.001)
    app = open_page("pages/3_Classify.py")
    app.file_uploader[0].set_value(("big.png", png_bytes("red"), "image/png"))
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
    labels = [b.label for b in app.get("download_button")]
    assert labels == ["ONNX bundle", "TorchScript bundle"]


def test_compare_gallery_shows_heat_maps_on_demand(with_runs):
    app = open_page("pages/2_Compare.py")
    plain = [picture.caption for image in app.image for picture in image.proto.imgs]
    plain_urls = {picture.url for image in app.image for picture in image.proto.imgs}
    app.toggle[1].set_value(True)
    app = app.run()
    assert_healthy(app)
    assert len(app.get("download_button")) == 2
    with_heat = [image.proto.imgs[0] for image in app.image]
    assert [picture.caption for picture in with_heat] == plain and len(plain) == 8
    assert not plain_urls & {picture.url for picture in with_heat}  # other pictures: the overlays
