"""A real Label Studio server for the tests: offline, on a loopback port we choose, under the network guard.

Label Studio lives in its own venv (its pins clash with the project's): `ALPR_LABEL_STUDIO_BIN`, else
`.ls-venv/bin/label-studio` under the repository root. A fresh data folder takes 30-60 s (migrations), so the
session migrates once into a template (database, SECRET_KEY in `.env`, the reviewer and their personal access
token) and every test starts from a `cp -a` copy of it (about 5 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
GUARD_SITE = Path(__file__).resolve().parent / "netguard_site"
USERNAME = "reviewer@example.com"
PASSWORD = "Passw0rd!-alpr-test"


def binary() -> Path:
    return Path(os.environ.get("ALPR_LABEL_STUDIO_BIN") or ROOT / ".ls-venv" / "bin" / "label-studio")


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str  # the reviewer's personal access token (a refresh JWT)
    username: str
    password: str
    data_dir: Path
    log: Path


def offline_env(data_dir: Path) -> dict[str, str]:
    """Label Studio's environment, built from scratch: no project code on its PYTHONPATH (it has its own `tasks`
    package), only the guard's sitecustomize, which reports refused connections to ALPR_NETGUARD_LOG."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(data_dir / "home"),  # it writes ~/.config/label-studio/user_id
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "DJANGO_DB": "sqlite",
        "SENTRY_DSN": "",  # the defaults are real sentry.io DSNs
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",  # else a PyPI request at start
        "COLLECT_ANALYTICS": "false",  # else telemetry and Google Tag Manager
        "CONVERTER_DOWNLOAD_RESOURCES": "false",
        "LOG_LEVEL": "WARNING",
        "LABEL_STUDIO_USERNAME": USERNAME,  # creates the user and organisation on the first start
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "PYTHONPATH": str(GUARD_SITE),
    }
    if os.environ.get("ALPR_NETGUARD_LOG"):
        env["ALPR_NETGUARD_LOG"] = os.environ["ALPR_NETGUARD_LOG"]
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(data_dir: Path, timeout_s: float) -> Iterator[tuple[str, Path]]:
    """Start Label Studio on a free port with `data_dir`; yield its URL once /health on that port says UP."""
    (data_dir / "home").mkdir(parents=True, exist_ok=True)
    port = _free_port()  # it silently moves to port+1 when busy: wait on exactly this one
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    cmd = [str(binary()), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, env=offline_env(data_dir), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout_s
            with httpx.Client(timeout=5) as http:
                while True:
                    try:
                        if http.get(f"{url}/health").json().get("status") == "UP":
                            break
                    except (httpx.HTTPError, ValueError):
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"Label Studio not up on {url} in {timeout_s:.0f} s:\n{_tail(log_path)}")
                    try:  # wait for the process to exit, or 0.25 s, whichever is first
                        proc.wait(0.25)
                        raise RuntimeError(f"Label Studio exited with {proc.returncode}:\n{_tail(log_path)}")
                    except subprocess.TimeoutExpired:
                        pass
            yield url, log_path
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT first (Django's runserver exits normally, so the guard's atexit report is written), then harder."""
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)  # its own session: only Label Studio's process group
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def session(url: str, username: str = USERNAME, password: str = PASSWORD) -> httpx.Client:
    """An HTTP client logged in as a browser is: the login form's CSRF cookie, then the session cookie."""
    http = httpx.Client(base_url=url, timeout=60)
    http.get("/user/login/").raise_for_status()
    form = {"csrfmiddlewaretoken": http.cookies["csrftoken"], "email": username, "password": password}
    done = http.post("/user/login/", data=form, headers={"Referer": f"{url}/user/login/"})
    if "sessionid" not in http.cookies:
        http.close()
        raise RuntimeError(f"login as {username} failed ({done.status_code})")
    http.headers["X-CSRFToken"] = http.cookies["csrftoken"]
    return http


def personal_access_token(url: str, username: str = USERNAME, password: str = PASSWORD) -> str:
    """What a person does in Account & Settings, without one: log in, then POST /api/token/ (one per user)."""
    with closing(session(url, username, password)) as http:
        resp = http.post("/api/token/")
        resp.raise_for_status()
        return resp.json()["token"]


def legacy_token(url: str, username: str = USERNAME, password: str = PASSWORD) -> str:
    """The user's legacy API token, after allowing legacy tokens in the organisation (off by default since 1.23)."""
    with closing(session(url, username, password)) as http:
        allow = {"api_tokens_enabled": True, "legacy_api_tokens_enabled": True}
        http.post("/api/jwt/settings", json=allow).raise_for_status()
        resp = http.get("/api/current-user/token")
        resp.raise_for_status()
        return resp.json()["token"]


def make_template(data_dir: Path, timeout_s: float = 300) -> None:
    """Migrate a fresh data folder and create the reviewer (the server creates them at its first start, and a login
    proves it). The server stops."""
    with _serve(data_dir, timeout_s) as (url, _):
        session(url).close()


@contextmanager
def server_from(template: Path, workdir: Path, timeout_s: float = 120) -> Iterator[Server]:
    """A running server on a `cp -a` copy of `template` under `workdir`, and the reviewer's personal access token,
    made on this copy (a token carried over from the template was refused in one full run); stopped at exit."""
    data_dir = workdir / "label-studio"
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(template), str(data_dir)], check=True, timeout=120)
    with _serve(data_dir, timeout_s) as (url, log):
        yield Server(url, personal_access_token(url), USERNAME, PASSWORD, data_dir, log)


def write_proposal(folder: Path, prelabels: dict[str, list[tuple]], size: tuple[int, int] = (320, 240)) -> Path:
    """JPEG frames (distinct noise plus a white 'plate') and YOLO pre-label files, as the proposal step writes them."""
    import cv2
    import numpy as np

    width, height = size
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    for i, (name, boxes) in enumerate(sorted(prelabels.items())):
        img = np.random.default_rng(i).integers(0, 255, (height, width, 3), dtype=np.uint8)
        cv2.rectangle(img, (100, 130), (200, 160), (255, 255, 255), -1)
        assert cv2.imwrite(str(folder / "images" / name), img)
        lines = [" ".join(str(v) for v in box) for box in boxes]
        (folder / "labels" / f"{Path(name).stem}.txt").write_text("".join(f"{line}\n" for line in lines))
    return folder
