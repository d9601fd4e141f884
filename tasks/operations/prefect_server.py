"""A Prefect server on 127.0.0.1 for `alpr-ops serve`, with its database under the project (`paths.prefect_home`).

`prefect server start` rather than Prefect's ephemeral API: the ephemeral one runs no scheduler, so the nightly
cron would never fire, and it has no UI.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.support.errors import AlprError

log = logging.getLogger(__name__)


class ServerError(AlprError):
    """The local Prefect server cannot start (port taken, exited, too slow); the message says which."""


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def local_server(home: Path, port: int, timeout_s: float = 120.0) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1:`port` (database in `home`), yield its API URL, stop it at exit."""
    url = api_url(port)
    if healthy(url):
        raise ServerError(
            f"something already answers on 127.0.0.1:{port}. If it is a Prefect server, set "
            f"PREFECT_API_URL={url} and run again; otherwise change serve.port in params.yaml."
        )
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    env.pop("PREFECT_API_URL", None)
    logfile = open(home / "server.log", "ab")  # noqa: SIM115  (closed below, after the server exits)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # its own session: Ctrl-C reaches `alpr-ops serve` alone, which stops its runner first and the server last
    proc = subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not healthy(url):
            if proc.poll() is not None:
                raise ServerError(f"the Prefect server exited ({proc.returncode}); see {home / 'server.log'}")
            if time.monotonic() > deadline:
                raise ServerError(f"the Prefect server did not answer within {timeout_s:.0f} s; see {home}/server.log")
            time.sleep(0.5)
        log.info("Prefect server on %s (UI http://127.0.0.1:%d, log %s)", url, port, home / "server.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        logfile.close()
