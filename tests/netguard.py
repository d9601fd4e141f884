"""A socket guard that records and refuses every connect or DNS lookup to a non-loopback host.

Libraries often swallow connection errors (Ultralytics falls back to "offline" silently), so refusing alone would
hide an attempt: callers check the returned list. Used in-process by conftest.py and in fresh interpreters by
tests/integration/test_offline.py.
"""

from __future__ import annotations

import ipaddress
import socket


def is_local(host: object) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def install() -> list[str]:
    """Patch `socket` in this interpreter; returns the list that collects every refused attempt."""
    attempts: list[str] = []
    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def check(sock: socket.socket, address: object) -> None:
        inet = sock.family in (socket.AF_INET, socket.AF_INET6)
        if inet and isinstance(address, tuple) and address and not is_local(address[0]):
            attempts.append(repr(address))
            raise OSError(f"network access to {address!r} blocked by the test guard")

    def connect(self: socket.socket, address: object) -> None:
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if not is_local(host):
            attempts.append(f"dns:{host}")
            raise socket.gaierror(f"DNS lookup of {host!r} blocked by the test guard")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    return attempts
