"""Home: what transfer learning is, and the state of the data, the weights and the device."""
import streamlit as st
import torch

from core.config import TrainConfig
from core.data import TUTORIAL_DATA_URL, ensure_tutorial_data, tutorial_data_dir
from core.errors import StudioError
from core.models import BACKBONES, SCENARIOS, find_local_weights, local_backbones, torchvision_cache_file
from core.runs import default_runs_dir, list_runs
from dashboard import state
from dashboard.health_panel import health_panel
from dashboard.widgets import private, show_error, shown_path

st.set_page_config(page_title="Transfer Learning Studio", page_icon="🐜", layout="wide")
SAMPLES, SAMPLE_WIDTH = 6, 140  # sample pictures of the data set, in pixels: small enough for two on a phone's row

st.title("Transfer Learning Studio")
st.markdown(
    "Training a network from scratch needs a large data set. **Transfer learning** starts instead from a "
    "network already trained on ImageNet's 1.2 million pictures and re-uses what it learned to see. "
    "Here a ResNet-18 (or MobileNetV2) learns to tell **ants from bees** from about 240 pictures, as in "
    "PyTorch's tutorial. The tutorial compares two ways of doing it; the studio adds two more, to see what "
    "the differences cost:"
)
st.markdown("\n".join(f"- **{s.title}** (`{s.name}`): {s.description}" for s in SCENARIOS.values()))
st.caption("Train them on the Train page, see them side by side on Compare, find out why they are wrong on "
           "Mistakes, and try them on your own photos on Classify. Your own data set goes on the Your own data page.")

data_col, status_col = st.columns([3, 2])

with data_col:
    st.subheader("Data set")
    folder = tutorial_data_dir()
    if (folder / "train").is_dir():
        scan = state.scan(folder)
        if scan.ok:
            st.success(f"Found{shown_path(folder, ' at ')}: {len(scan.classes)} classes, "
                       f"{len(scan.samples['train'])} training and {len(scan.samples['val'])} validation pictures.")
            st.dataframe(scan.counts(), width="content")
            if scan.skipped:
                st.caption(f"{len(scan.skipped)} file(s) skipped as not readable pictures: "
                           + ", ".join(s.path.name for s in scan.skipped))
            samples = [next(p for p, label in scan.samples["train"] if label == c) for c in range(len(scan.classes))]
            samples += [p for p, _ in scan.samples["train"][1::37]][: SAMPLES - len(samples)]
            with st.container(horizontal=True, gap="small"):  # as many to a row as fit: two on a phone
                for path in samples[:SAMPLES]:
                    st.image(state.thumbnail(str(path)), caption=f"{path.parent.name}: {path.name}", width=SAMPLE_WIDTH)
            st.subheader("Data health")
            health_panel(scan, "tutorial")
        else:
            st.error(private(" ".join(scan.problems)))
    else:
        st.warning(f"The tutorial's data set is not{shown_path(folder, ' at ') or ' here'} yet.")
        if st.button("Download the data set (about 45 MB)", type="primary"):
            bar = st.progress(0.0, text="Downloading...")

            def show(done: int, total: int | None) -> None:
                if total:
                    bar.progress(done / total, text=f"Downloading... {done / 1e6:.1f} of {total / 1e6:.1f} MB")

            try:
                ensure_tutorial_data(progress=False, on_progress=show)
            except StudioError as exc:
                bar.empty()
                show_error(exc)
            else:
                bar.progress(1.0, text="Done.")
                st.rerun()
        st.info(private(f"Offline? Download {TUTORIAL_DATA_URL} elsewhere and unzip it so that `{folder}/train` "
                        "exists, or start the app with `STUDIO_DATA_ROOT` set to the folder that holds "
                        "`hymenoptera_data`."))

with status_col:
    st.subheader("Pretrained weights")
    listed = dict.fromkeys([TrainConfig().backbone, *local_backbones(), *state.weights_problems()])
    for backbone in (BACKBONES[name] for name in listed):
        try:
            found = find_local_weights(backbone)
        except StudioError as exc:
            st.error(private(f"**{backbone.title}**: {exc}"))
            continue
        if found:
            path, kind = found
            st.write(f"✅ **{backbone.title}**: {'local file' if kind == 'file' else 'torchvision cache'}"
                     f"{shown_path(path)}")
        elif backbone.name in state.weights_problems():
            st.write(f"❌ **{backbone.title}**: not on this machine, and the download failed (no internet?). The "
                     "scenarios that start from ImageNet weights cannot train with it; set `STUDIO_WEIGHTS` to a "
                     "local file or folder and restart the app.")
        else:
            st.write(f"⬇️ **{backbone.title}**: not on this machine yet; downloaded by torchvision when a run first "
                     f"needs it{shown_path(torchvision_cache_file(backbone), ', into ')} (or set `STUDIO_WEIGHTS` to "
                     "a local file or folder).")
    st.caption(f"The other {len(BACKBONES) - len(listed)} torchvision backbones download their weights when a run "
               "first needs them: the Train page lists them all.")

    st.subheader("Device")
    device = state.device()
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        st.write(f"🚀 GPU: **{properties.name}**, {properties.total_memory / 2**30:.0f} GiB")
    elif device.type == "mps":
        st.write("🚀 Apple GPU (MPS)")
    else:
        st.write(f"🖥️ CPU ({torch.get_num_threads()} threads). Training is slower than on a GPU; the frozen "
                 "scenario is the quick one.")

    listing = list_runs()
    st.subheader("Runs")
    st.write(f"{len(listing.runs)} saved run(s){shown_path(default_runs_dir(), ' in ')}.")
    for damaged in listing.damaged:
        st.warning(private(f"Skipped a damaged run folder: {damaged.reason}"))
