"""Your own data: an ImageFolder-style set from a folder on this machine or from an uploaded zip."""
import tempfile
from pathlib import Path

import streamlit as st

from core.data import DatasetScan, import_dataset_zip, uploads_dir
from core.errors import StudioError
from dashboard import state

st.set_page_config(page_title="Your own data · Transfer Learning Studio", page_icon="🗂️", layout="wide")
st.title("Your own data")
st.markdown(
    "Any picture set laid out like the tutorial's works: a folder with `train/` and `val/`, and in each one "
    "folder per class (at least two classes, the same in both), for example `train/cats/*.jpg`, "
    "`train/dogs/*.jpg`, `val/cats/*.jpg`, `val/dogs/*.jpg`."
)


def show_scan(scan: DatasetScan) -> None:
    if not scan.ok:
        st.error(f"`{scan.root}` cannot be used: " + " ".join(scan.problems))
        return
    st.success(f"`{scan.root}`: {len(scan.classes)} classes ({', '.join(scan.classes)}), "
               f"{len(scan.samples['train'])} training and {len(scan.samples['val'])} validation pictures. "
               "Choose it on the Train page.")
    st.dataframe(scan.counts())
    if scan.skipped:
        st.warning(f"{len(scan.skipped)} file(s) will be skipped because they are not readable pictures:")
        st.dataframe({"file": [str(s.path.relative_to(scan.root)) for s in scan.skipped],
                      "reason": [s.reason for s in scan.skipped]}, hide_index=True)


folder_tab, zip_tab = st.tabs(["A folder on this machine", "Upload a zip"])

with folder_tab:
    path = st.text_input("Folder", placeholder="/home/me/pictures/my_set")
    if path:
        show_scan(state.scan(Path(path).expanduser()))
        st.caption("On the Train page choose 'Another folder...' and paste this path.")

with zip_tab:
    upload = st.file_uploader("Zip file with train/ and val/", type=["zip"])
    if upload is not None:
        key = f"imported-{upload.file_id}"
        if key not in st.session_state:
            with tempfile.TemporaryDirectory() as work, st.spinner("Checking and unpacking..."):
                zip_path = Path(work) / "upload.zip"
                zip_path.write_bytes(upload.getvalue())
                try:
                    folder, _ = import_dataset_zip(zip_path, uploads_dir(), Path(upload.name).stem)
                    st.session_state[key] = str(folder)
                except StudioError as exc:
                    st.session_state[key] = exc
        outcome = st.session_state[key]
        if isinstance(outcome, StudioError):
            st.error(str(outcome))
        else:
            show_scan(state.scan(Path(outcome)))
