"""Your own data: an ImageFolder-style set from a folder on this machine or from an uploaded zip.

In shared mode only the zip: it is unpacked into this browser session's own folder, within the upload quota."""
import tempfile
from pathlib import Path

import streamlit as st

from core.data import DatasetScan, import_dataset_zip, safe_folder_name, uploads_dir
from core.errors import StudioError
from dashboard import state
from dashboard.health_panel import health_panel
from dashboard.widgets import MAX_ZIP_MB, private, show_error

st.set_page_config(page_title="Your own data · Transfer Learning Studio", page_icon="🗂️", layout="wide")
st.title("Your own data")
st.markdown(
    "Any picture set laid out like the tutorial's works: a folder with `train/` and `val/`, and in each one "
    "folder per class (at least two classes, the same in both), for example `train/cats/*.jpg`, "
    "`train/dogs/*.jpg`, `val/cats/*.jpg`, `val/dogs/*.jpg`. A third folder `test/`, with the same classes, is "
    "optional: the best epoch is chosen on `val/`, which makes its accuracy a little optimistic, so each run is "
    "also scored once on `test/`, pictures that no choice looked at."
)
settings = state.settings()


def show_scan(scan: DatasetScan) -> None:
    if not scan.ok:
        st.error(private(f"`{scan.root}` cannot be used: " + " ".join(scan.problems)))
        return
    test = f" and {len(scan.samples['test'])} test pictures" if scan.has_test else " (no test/ folder)"
    st.success(private(f"`{scan.root}`: {len(scan.classes)} classes ({', '.join(scan.classes)}), "
                       f"{len(scan.samples['train'])} training and {len(scan.samples['val'])} validation pictures"
                       f"{test}. Choose it on the Train page."))
    st.dataframe(scan.counts())
    if scan.skipped:
        st.warning(f"{len(scan.skipped)} file(s) will be skipped because they are not readable pictures:")
        st.dataframe({"file": [str(s.path.relative_to(scan.root)) for s in scan.skipped],
                      "reason": [private(s.reason) for s in scan.skipped]}, hide_index=True)
    st.subheader("Data health")
    health_panel(scan, str(scan.root))


if settings.shared:  # visitors see no server folders: uploads only
    zip_tab = st.container()
else:
    folder_tab, zip_tab = st.tabs(["A folder on this machine", "Upload a zip"])
    with folder_tab:
        path = st.text_input("Folder", placeholder="/home/me/pictures/my_set")
        if path:
            show_scan(state.scan(Path(path).expanduser()))
            st.caption("On the Train page choose 'Another folder...' and paste this path.")

with zip_tab:
    upload = st.file_uploader("Zip file with train/ and val/ (and test/ if you have one)", type=["zip"],
                              max_upload_size=MAX_ZIP_MB)
    if settings.shared:
        quota = f" All visitors' uploads share {settings.upload_quota_mb:g} MB." if settings.upload_quota_mb else ""
        st.caption("Your uploads are yours: other visitors do not see them, and they are offered to you for this "
                   f"browser session (reloading the page starts a new one).{quota}")
    if upload is not None:
        key = f"imported-{upload.file_id}"
        if key not in st.session_state:
            with tempfile.TemporaryDirectory() as work, st.spinner("Checking and unpacking..."):
                zip_path = Path(work) / (Path(upload.name).name or "upload.zip")
                zip_path.write_bytes(upload.getvalue())
                try:
                    folder, _ = import_dataset_zip(zip_path, state.my_uploads(), Path(upload.name).stem,
                                                   root=uploads_dir(), quota_bytes=settings.upload_quota_bytes)
                    st.session_state[key] = str(folder)
                except StudioError as exc:
                    st.session_state[key] = exc
        outcome = st.session_state[key]
        if isinstance(outcome, StudioError):
            show_error(outcome)
        else:
            show_scan(state.scan(Path(outcome)))
            if Path(outcome).name != safe_folder_name(Path(upload.name).stem):
                st.info(f"A data set named '{safe_folder_name(Path(upload.name).stem)}' was already here, so this "
                        f"upload was saved as '{Path(outcome).name}'. On the Train page both are offered.")
