"""The suite itself: no test can pass by downloading, in this process or in those it starts."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]


def test_a_public_address_is_refused_and_recorded(network_attempts):
    with pytest.raises(OSError, match="may not reach the network"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(OSError, match="may not reach the network"):
        socket.getaddrinfo("download.pytorch.org", 443)
    assert len(network_attempts.attempts()) == 2


def test_loopback_still_works():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass


def test_processes_started_by_tests_are_guarded_too(network_attempts):
    code = "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/models/x.pth', timeout=2)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert result.returncode != 0 and "may not reach the network" in result.stderr
    assert network_attempts.attempts()


def test_a_test_that_reaches_out_fails(pytester):
    pytester.makeconftest(f"import sys; sys.path.insert(0, {str(PROJECT)!r}); from tests.conftest import *")
    pytester.makepyfile(test_sneaky="""
        import urllib.request

        def test_downloads_quietly():
            try:
                urllib.request.urlopen("http://example.com", timeout=2)
            except OSError:
                pass  # a test that swallows the error must still fail
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the test tried to reach the network*", "*resolve example.com*"])
