"""The network guard itself: it must record and refuse non-loopback access, and let loopback through."""

import os
import subprocess
import sys
from pathlib import Path

import netguard

SCRIPT = """
import socket, netguard
attempts = netguard.install()
try:
    socket.create_connection(("example.com", 80), timeout=1)
except OSError:
    pass
try:
    socket.socket().connect(("1.1.1.1", 80))
except OSError:
    pass
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
socket.create_connection(server.getsockname(), timeout=1).close()
print(attempts)
"""


def test_is_local() -> None:
    assert netguard.is_local("127.0.0.1") and netguard.is_local("::1") and netguard.is_local("localhost")
    assert not netguard.is_local("1.1.1.1") and not netguard.is_local("example.org")


def test_guard_records_remote_and_allows_loopback() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['dns:example.com', \"('1.1.1.1', 80)\"]"
