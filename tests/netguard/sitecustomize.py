"""Refuses every connection to a non-local address, in the test process and in the processes it starts.

Tests put this folder on PYTHONPATH, so Python imports it at start-up in subprocesses too (the command
line, the Streamlit server). A refused attempt raises OSError, as a machine without a network would, and
is written to $STUDIO_NETGUARD_LOG so that the test suite can fail the test that made it.
"""
import ipaddress
import os
import socket

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlocked(ConnectionRefusedError):
    pass


def _is_local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what: str):
    log = os.environ.get("STUDIO_NETGUARD_LOG")
    if log:
        with open(log, "a") as stream:
            stream.write(f"{os.getpid()} {what}\n")
    raise NetworkBlocked(f"tests may not reach the network ({what})")


def _check_address(address) -> None:
    if isinstance(address, tuple) and address and not _is_local(address[0]):
        _refuse(f"connect {address[0]}:{address[1] if len(address) > 1 else ''}")


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_address(address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_address(address)
    return _connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_address(args[-1])
    return _sendto(self, data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        _refuse(f"resolve {host}")
    return _getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.socket.sendto = _guarded_sendto
    socket.getaddrinfo = _guarded_getaddrinfo


if os.environ.get("STUDIO_NETGUARD") == "1":
    install()
