"""The project's MLflow conventions: tag names, shared artifact paths, the client, and how a small run is logged.

Every module that writes or reads MLflow runs takes these names from here, so a writer and its readers (the rebuild
and gc, the nightly check and status) cannot drift apart. Imported by the gate side too (Python 3.10, no PyTorch):
MLflow is imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.support.config import TrackingConfig

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
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store (README, the demo's hint)


def gate_tag(gate: str) -> str:
    """The tag (or gate metric) name of one gate: `gate.<gate>`."""
    return f"{GATE_PREFIX}{gate}"


def gate_outcome(passed: bool, value: float, op: str, threshold: float) -> str:
    """How a gate's verdict reads in its tag: `pass: 0.981 >= 0.97`."""
    return f"{'pass' if passed else 'fail'}: {value:.6g} {op} {threshold:.6g}"


def client(cfg: TrackingConfig) -> Any:  # -> mlflow.MlflowClient (imported lazily: slow import)
    """An MLflow client bound to the configured store (tracking and registry). All calls go through an explicit
    client, so nothing global (tracking URI, active run) is set as a side effect."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cfg.uri, registry_uri=cfg.uri)


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
    a local store (sqlite, files) is opened with `mlflow ui` on `LOCAL_UI`.
    """
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
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
