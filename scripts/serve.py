"""Start the dashboard as `streamlit run streamlit_app.py ARGS...` does (./run_app.sh runs this), with two
differences:

- SIGHUP, which a closed terminal sends, stops the server as SIGTERM and Ctrl-C do. Streamlit then stops cleanly,
  and a training job still running is saved, marked cancelled, first (core/jobs.py). Without this, SIGHUP ends the
  process at once and the job's work is lost.
- pages/ holds the pages that streamlit_app.py lists with st.navigation. Streamlit takes a folder of that name for
  its older file-based navigation until the first st.navigation call: the first visit after a start, by a direct
  link such as /Train, ran that page alone under a list of file names ("streamlit app", "home"...).
"""
import os
import signal
import sys

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli


def main() -> int:
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", "run", "streamlit_app.py", *sys.argv[1:]]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
