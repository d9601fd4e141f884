"""The project's MLflow conventions: tag names, shared artifact paths, the client, and how a small run is logged.

Every module that writes or reads MLflow runs takes these names from here, so a writer and its readers (the rebuild
and gc, the nightly check and status) cannot drift apart. Imported by the gate side too (Python 3.10, no PyTorch):
MLflow is imported inside functions only.

The client (`client`) waits a bounded time for a store that does not answer and then names it (`StoreUnavailable`):
a sqlite database locked by another process gets SQLite's busy wait of `STORE_WAIT_S`, an MLflow server a request
timeout of `STORE_WAIT_S` and two quick retries (MLflow's own defaults wait about 4 minutes for a server that is
down). Its credentials are never shown: MLflow's "View run at" line, which prints the server's URL with them, is off.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.support.errors import AlprError, Remedy

if TYPE_CHECKING:
    from tasks.support.config import TrackingConfig

log = logging.getLogger(__name__)

KIND_TAG = "alpr.kind"  # what a run records: "rebuild" (parent), "candidate" (child), "nightly", "promotion", ...
PRUNED_TAG = "alpr.pruned"  # on a candidate run whose model artifacts `alpr-ops gc` deleted (when, as the value)
RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
GATE_PREFIX = "gate."  # the gates' verdicts (tags) and the gate box's measurements (metrics)
ARTIFACT_PATH = "artifact"  # what a registry version points at: the deployable artifact and its candidate.json
LINEAGE_JSON = "lineage.json"  # a rebuild parent run's artifact: its lineage tags and the videos it was made from
# on a candidate run whose artifact is byte-identical to a registered version's: that version (no new one is made;
# it keeps its own run and lineage) and its run
REUSED_VERSION_TAG, REUSED_RUN_TAG = "registry.reused_version", "registry.reused_from_run"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store (README quick start, the demo's hint)


def gate_tag(gate: str) -> str:
    """The tag (or gate metric) name of one gate: `gate.<gate>`."""
    return f"{GATE_PREFIX}{gate}"


def gate_outcome(passed: bool, value: float, op: str, threshold: float) -> str:
    """How a gate's verdict reads in its tag: `pass: 0.981 >= 0.97`."""
    return f"{'pass' if passed else 'fail'}: {value:.6g} {op} {threshold:.6g}"


STORE_WAIT_S = 20  # the longest one call waits for the store: SQLite's busy wait (README), an HTTP request's timeout
# MLflow's HTTP settings (its own environment variables), unless the environment sets them: a server that refuses
# fails in seconds, one that accepts and never answers after 3 x STORE_WAIT_S. The flows retry I/O steps on top.
HTTP_WAITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(STORE_WAIT_S),
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
# MLflow prints "View run <name> at: <server URL>/#/..." to stdout when a run on a server ends, credentials included
QUIET_URL = ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
REDACTED = "***"  # what `tasks.support.config.redact_uri` puts in place of a secret
_REDACTED_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)\*\*\*@")


class StoreUnavailable(AlprError):
    """The MLflow store did not answer within the bounded wait (a database still locked after its busy wait, a server
    down or silent): an error naming the store, never to be read as an empty store."""

    transient = True  # it may pass on its own: flows/retry.py retries I/O steps on it


class StoreMissing(AlprError):
    """`tracking.uri` names a sqlite file that does not exist, for a command that only reads the store: MLflow would
    create an empty store there (a typo in the path then reads as "no champion")."""

    remedy = Remedy.PARAMS


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (None: another store, or SQLite's in-memory database)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


def require_store(cfg: TrackingConfig, context: str = "") -> None:
    """Refuse a sqlite store whose file does not exist, before any MLflow call creates it. For the commands that only
    read the store (status, report, rollback, nightly, gc); the rebuild creates it on purpose. `context`: what the
    command cannot do without it, put first in the message."""
    path = sqlite_path(cfg.uri)
    if path is None or path.is_file():
        return
    raise StoreMissing(
        f"{context + ': ' if context else ''}tracking.uri {cfg.shown_uri} names no MLflow store: {path} does not "
        "exist. A typo in the path? (A new project's store is created by its first rebuild.)",
        path=str(path),
    )


def resolve_uri(uri: str) -> str:
    """`uri` as MLflow is to use it. A URI whose credentials were redacted (`***`, as it is passed to the gate worker
    and recorded in Prefect) takes them from this machine's environment: its MLFLOW_TRACKING_URI when set, else
    the URI without them, and MLflow then reads MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."""
    if REDACTED not in uri:
        return uri
    own = os.environ.get("MLFLOW_TRACKING_URI")
    if own:
        return own
    bare = _REDACTED_USERINFO.sub(r"\1", uri)
    if REDACTED in bare:
        raise StoreMissing(
            f"the tracking URI {uri} has redacted secrets that only this machine's environment can supply: set "
            "MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) here"
        )
    return bare


def store_uri(uri: str) -> str:
    """The URI handed to MLflow for the configured `uri` (`resolve_uri`): a sqlite store gets SQLite's busy wait of
    `STORE_WAIT_S` (sqlite3's default is 5 s; MLflow's sessions wait 20 s but its schema check at connect does not),
    unless the URI sets its own `timeout`."""
    uri = resolve_uri(uri)
    if uri.startswith("sqlite:") and "timeout=" not in uri.partition("?")[2]:
        return f"{uri}{'&' if '?' in uri else '?'}timeout={STORE_WAIT_S}"
    return uri


def bound_waits() -> None:
    """Set MLflow's HTTP waits (`HTTP_WAITS`, unless the environment sets them) and silence its "View run at" line.
    MLflow reads these at each request, so setting them before the first call is enough."""
    for key, value in HTTP_WAITS.items():
        os.environ.setdefault(key, value)
    os.environ[QUIET_URL[0]] = QUIET_URL[1]


def client(cfg: TrackingConfig) -> Any:  # -> mlflow.MlflowClient (imported lazily: slow import)
    """An MLflow client bound to the configured store (tracking and registry). All calls go through an explicit
    client, so nothing global (tracking URI, active run) is set as a side effect; the store's waits are bounded
    (`bound_waits`, `store_uri`) and a store that does not answer raises `StoreUnavailable` naming it."""
    from mlflow import MlflowClient

    bound_waits()
    uri = store_uri(cfg.uri)
    try:
        mc = MlflowClient(tracking_uri=uri, registry_uri=uri)  # a SQL store is opened (and checked) here already
    except Exception as e:
        if not unanswered(e):
            raise
        raise StoreUnavailable(unanswered_message(cfg.shown_uri, uri, e)) from e
    return NamedStoreClient(mc, cfg.shown_uri)


class NamedStoreClient:
    """An MlflowClient whose calls raise `StoreUnavailable`, naming the store (credentials redacted), when the store
    did not answer; every other error and every attribute pass through unchanged."""

    def __init__(self, inner: Any, shown: str) -> None:
        self._inner, self._shown = inner, shown

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_shown"):  # not set yet (unpickling): never recurse
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except StoreUnavailable:
                raise
            except Exception as e:
                if not unanswered(e):
                    raise
                raise StoreUnavailable(unanswered_message(self._shown, self._inner.tracking_uri, e)) from e

        return call


def unanswered(exc: BaseException) -> bool:
    """Whether `exc`, or an error it came from, says the store did not answer (a locked or unreadable database, a
    connection refused or timed out), rather than answering with an error of its own (no such run, a bad filter)."""
    import sqlite3

    import requests

    kinds: tuple[type[BaseException], ...] = (
        sqlite3.OperationalError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
    )
    try:
        import sqlalchemy.exc

        kinds += (sqlalchemy.exc.OperationalError,)
    except ImportError:  # mlflow-skinny (the gate): no SQL store
        pass
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds) or getattr(e, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        todo += [e.__cause__, e.__context__]
    return False


def unanswered_message(shown: str, raw: str, exc: BaseException) -> str:
    """What `StoreUnavailable` says: the store (redacted), the wait it was given, the cause in one line."""
    from tasks.support.config import redact_text

    orig = getattr(exc, "orig", None)  # SQLAlchemy's: the driver's own message, without the SQL and a link
    lines = str(exc if orig is None else orig).strip().splitlines() or [""]
    why = redact_text(lines[0].replace(raw, shown))[:400]
    timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_WAITS["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_WAITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    bound = (
        f"a database lock is waited for {STORE_WAIT_S} s"
        if raw.startswith("sqlite:")
        else f"a request is waited for {timeout} s, {retries} retries"
    )
    return (
        f"the MLflow store {shown} (tracking.uri) did not answer ({bound}): {type(exc).__name__}: {why}. Check that "
        "its server is running and reachable, or that no other process holds its database locked, then run the "
        "command again."
    )


def experiment_id(mlflow_client: Any, cfg: TrackingConfig) -> str:
    """The experiment's id, creating it with its artifact root (`tracking.artifacts`) if missing.

    With an MLflow server (`tracking.uri` http...), the server's `--artifacts-destination` is the artifact root:
    artifacts go through the server, so workers on other machines need no access to its storage.
    """
    exp = mlflow_client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    if cfg.uri.startswith(("http://", "https://")):
        return mlflow_client.create_experiment(cfg.experiment)
    location = cfg.artifacts.resolve().as_uri() if "://" not in str(cfg.artifacts) else str(cfg.artifacts)
    return mlflow_client.create_experiment(cfg.experiment, artifact_location=f"{location}/{cfg.experiment}")


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The MLflow UI link of an experiment, opening on its runs table.

    MLflow 3 lands an experiment link on the GenAI "Overview" page (traces, "No data available") unless the URL says
    `workflowType=machine_learning` (the "Model training" view, whose "Runs" tab lists the rebuilds); the experiment
    tag `mlflow.experimentKind` does not change that (measured on 3.17.2). A server store (`http(s)://`) is its own UI;
    a local store (sqlite, files) is opened with `mlflow ui` on `LOCAL_UI`. The link never holds credentials (it is
    printed, written to reports and shown by status): a user name and password in the URI are left out (the browser
    asks for them), secret query values redacted.
    """
    from urllib.parse import urlsplit, urlunsplit

    from tasks.support.config import redact_uri

    base = LOCAL_UI
    if tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(redact_uri(tracking_uri))
        base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


@contextmanager
def small_run(mc: Any, cfg: TrackingConfig, kind: str, name: str, tags: dict[str, str]) -> Iterator[Any]:
    """A small run recording one event (a promotion, a rollback, an unchanged rebuild, a nightly check): created
    with its kind, name and `tags`, yielded (the caller logs metrics or files to it), then FINISHED; FAILED when the
    body raises, never left RUNNING."""
    run = mc.create_run(experiment_id(mc, cfg), tags={KIND_TAG: kind, RUN_NAME_TAG: name, **tags})
    try:
        yield run
    except BaseException:
        mc.set_terminated(run.info.run_id, status="FAILED")
        raise
    mc.set_terminated(run.info.run_id)
