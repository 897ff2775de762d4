"""./run_app.sh listens on this machine only unless told otherwise (.streamlit/config.toml), and an argument
such as --server.address 0.0.0.0 shares it on purpose. Linux only: the listening sockets are read from /proc."""
import ipaddress
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_browser import PROJECT, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")


def listening_addresses(port: int) -> set[str]:
    """The addresses on which something listens on TCP `port`."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in the machine's (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def addresses_of_run_app(tmp_path, *args: str) -> set[str]:
    port = free_port()
    env = {**os.environ, "STUDIO_DATA_ROOT": str(tmp_path / "data"), "STUDIO_RUNS_DIR": str(tmp_path / "runs")}
    process = subprocess.Popen(["./run_app.sh", "--server.headless", "true", "--server.port", str(port), *args],
                               cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    return listening_addresses(port)
            except OSError:
                time.sleep(0.5)
        process.kill()
        pytest.fail("run_app.sh did not start the server:\n" + process.communicate(timeout=30)[0])
    finally:
        process.terminate()
        process.wait(30)


def test_run_app_listens_on_localhost_only(tmp_path):
    assert addresses_of_run_app(tmp_path) == {"127.0.0.1"}


def test_an_argument_shares_it_on_purpose(tmp_path):
    # --browser.serverAddress names the URL to print, or streamlit asks the internet for this machine's address
    shared = addresses_of_run_app(tmp_path, "--server.address", "0.0.0.0", "--browser.serverAddress", "localhost")
    assert shared == {"0.0.0.0"}
