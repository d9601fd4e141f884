"""A reviewer's view: `mlflow server` on 127.0.0.1, a small rebuild logged to it, and headless Chromium (Debian's
own `chromium`, driven by Playwright) opening the experiment link the project prints (the runs table with the
rebuild), the rebuild's trade-off chart, the compare-runs page and the FP32-vs-candidate image artifact.

Screenshots are kept under `test-artifacts/` (gitignored) so CI can publish them.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
from conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, mlflow_server_at

from tasks.operations.promote import promote
from tasks.operations.status import status
from tasks.pipeline.lineage import lineage
from tasks.pipeline.track import log_rebuild
from tasks.pipeline.tradeoff import log_tradeoff
from tasks.support.config import Params
from tasks.support.tracking import client

pytestmark = pytest.mark.e2e

GRID_WIDTH = 966  # tasks/pipeline/plots.py: two 480-pixel frames and a 6-pixel gap
TRADEOFF_WIDTH = 1050  # tasks/pipeline/tradeoff.py: 10.5 inches at 100 dpi


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """`mlflow server` (sqlite store, artifacts in tmp) on a free loopback port; stopped after the test."""
    with mlflow_server_at(tmp_path) as url:
        yield url


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium not installed (apt-get install -y chromium)")
def test_compare_view_and_image_artifact_in_chromium(
    mlflow_server: str, built: tuple, validation_report, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    # a small rebuild against the server: track every candidate, then the promotion gate
    params, candidates = built
    tracking = params.tracking.model_copy(update={"uri": mlflow_server, "artifacts": tmp_path / "mlartifacts"})
    store: Params = params.model_copy(update={"tracking": tracking})
    p = store.paths
    tags = lineage(Path.cwd(), candidates[0].frames_hash, store.model.sha256, p.videos.with_suffix(".dvc"), p.videos)
    record = log_rebuild(store, candidates, validation_report.metrics, tags, validation_report)
    gate = store.promote.model_copy(update={"gate_dir": tmp_path / "gate"})
    promote(record, validation_report.metrics, gate, store.tracking, p.holdout, store.validate_)
    log_tradeoff(store.tracking, gate, store.build.reference, record.parent_run_id)  # as the promote flow does
    link = status(store.tracking, gate)["rebuild"]["mlflow_url"]  # what `alpr-ops status` / the demo print
    rebuild_name = client(store.tracking).get_run(record.parent_run_id).info.run_name

    run_ids = [record.parent_run_id, *(c.run_id for c in record.candidates.values())]
    grid_run = record.candidates["ov-int8"].run_id
    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []

    def loopback_only(route) -> None:  # the browser's own network guard: nothing leaves 127.0.0.1
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlparse(url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", loopback_only)
            # the printed link lands on the experiment's runs table (not the GenAI overview), the rebuild listed
            page.goto(link)
            page.get_by_text(rebuild_name, exact=True).first.wait_for(timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow-experiment-runs.png"))
            # the rebuild's trade-off chart: among the parent run's artifacts, rendered by the artifact viewer
            chart = f"{mlflow_server}/get-artifact?path=tradeoff/tradeoff.png&run_uuid={record.parent_run_id}"
            assert page.request.get(chart).body()[:8] == b"\x89PNG\r\n\x1a\n"
            page.goto(
                f"{mlflow_server}/#/experiments/{record.experiment_id}/runs/{record.parent_run_id}"
                "/artifacts/tradeoff/tradeoff.png"
            )
            page.wait_for_function(
                f"() => Array.from(document.images).some(i => i.complete && i.naturalWidth === {TRADEOFF_WIDTH})",
                timeout=120_000,
            )
            page.screenshot(path=str(ARTIFACTS / "mlflow-tradeoff.png"))
            compare = (
                f"{mlflow_server}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
                f"&experiments={quote(json.dumps([record.experiment_id]))}"
            )
            page.goto(compare)
            page.get_by_text(f"Comparing {len(run_ids)} Runs").wait_for(timeout=120_000)
            for name in record.candidates:  # every candidate run is on the page, not an empty comparison
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow-compare-runs.png"), full_page=True)

            # the image artifact: served by the server as a PNG, and rendered by the UI's artifact viewer
            served = page.request.get(f"{mlflow_server}/get-artifact?path=plots/agreement_grid.png&run_uuid={grid_run}")
            assert served.ok and served.headers["content-type"] == "image/png"
            assert served.body()[:8] == b"\x89PNG\r\n\x1a\n"
            page.goto(
                f"{mlflow_server}/#/experiments/{record.experiment_id}/runs/{grid_run}/artifacts/plots/agreement_grid.png"
            )
            page.wait_for_function(
                f"() => Array.from(document.images).some(i => i.complete && i.naturalWidth === {GRID_WIDTH})",
                timeout=120_000,
            )
            page.screenshot(path=str(ARTIFACTS / "mlflow-agreement-grid.png"))
        finally:
            browser.close()
    assert not outside, f"the MLflow UI reached beyond loopback: {outside}"
    assert (ARTIFACTS / "mlflow-compare-runs.png").stat().st_size > 10_000
