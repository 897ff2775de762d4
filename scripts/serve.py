"""Start the dashboard as `streamlit run streamlit_app.py ARGS...` does (./run_app.sh runs this), with one
difference: SIGHUP, which a closed terminal sends, stops the server as SIGTERM and Ctrl-C do. Streamlit then
stops cleanly, and a training job still running is saved, marked cancelled, first (core/jobs.py). Without
this, SIGHUP ends the process at once and the job's work is lost."""
import os
import signal
import sys

from streamlit.web import cli


def main() -> int:
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    sys.argv = ["streamlit", "run", "streamlit_app.py", *sys.argv[1:]]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
