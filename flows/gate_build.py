"""The `gate-build` flow: runs on a gate box's worker (work pool `serve.work_pools.tensorrt`, e.g. gate-orin).

It downloads the bundle the host logged to a candidate's MLflow run, builds the TensorRT engine on the gate's GPU,
times it, measures agreement with the FP32 reference's detections and logs the results back to the same run
(`tasks/edge/gate_build.py`). Everything it imports runs on JetPack's Python 3.10 without PyTorch
(`tests/unit/test_gate_side.py`). The host starts it with `tasks.pipeline.gate_remote.request_gate_build`.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.retry import IO_RETRIES
from tasks.edge import gate_build as edge

download_bundle = task(edge.download_bundle, name="gate-download-bundle", cache_policy=NO_CACHE, **IO_RETRIES)
build_and_measure = task(edge.build_and_measure, name="gate-build-engine", cache_policy=NO_CACHE)
log_result = task(edge.log_result, name="gate-log-result", cache_policy=NO_CACHE, **IO_RETRIES)
discard = task(edge.discard, name="gate-discard-work", cache_policy=NO_CACHE)


@flow(name="gate-build", log_prints=False)
def gate_build(run_id: str, tracking_uri: str | None = None, work_dir: str | None = None) -> dict[str, float]:
    """Build, time and check the engine of the candidate run `run_id`; returns the metrics it logged there.
    `tracking_uri`: the MLflow server the host uses, credentials redacted (a flow parameter is shown in the Prefect
    UI): the worker's own MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_USERNAME / PASSWORD) supplies them. None: the
    worker's MLFLOW_TRACKING_URI."""
    bundle = download_bundle(run_id, tracking_uri, work_dir)
    result = build_and_measure(bundle)
    metrics = log_result(run_id, result, tracking_uri)
    discard(bundle)
    return metrics
