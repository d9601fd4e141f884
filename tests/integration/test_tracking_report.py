"""Every validation number, plot and dataset of a rebuild lands in MLflow, and `report` reads it back."""

import json
from pathlib import Path

import pytest

from tasks.operations.report import load_rebuild, write_report
from tasks.pipeline.lineage import lineage
from tasks.pipeline.track import log_rebuild
from tasks.pipeline.tradeoff import log_tradeoff
from tasks.pipeline.validate import GEOMETRY_ROLE
from tasks.support.config import Params
from tasks.support.tracking import client, experiment_url

pytestmark = pytest.mark.integration


@pytest.fixture
def logged(store: Params, built: tuple, validation_report):
    _, candidates = built
    p = store.paths
    tags = lineage(Path.cwd(), candidates[0].frames_hash, store.model.sha256, p.videos.with_suffix(".dvc"), p.videos)
    return log_rebuild(store, candidates, validation_report.metrics, tags, validation_report)


def test_every_metric_plot_and_dataset_is_in_mlflow(store: Params, logged, validation_report, tmp_path: Path) -> None:
    mc = client(store.tracking)
    parent = mc.get_run(logged.parent_run_id)
    tags = parent.data.tags
    # lineage: videos with hashes, DVC state, git commit, frames hash, params
    assert tags["videos_count"] == "2" and len(tags["videos_sha256"]) == 64
    assert all(":" in v for v in tags["videos"].split(", "))
    assert tags["dvc_rev"] and len(tags["git_commit"]) >= 7 and tags["agreement_frames"].endswith("images")
    assert parent.data.params["validate.threads"] == str(store.validate_.threads)
    contexts = {i.dataset.name: i.tags[0].value for i in parent.inputs.dataset_inputs}
    assert contexts == {
        "gate-videos": "source",
        "calibration-frames": "calibration",
        "holdout-labelled": "evaluation",
        "holdout-frames": "agreement",  # the unlabelled frames agreement used
    }
    parent_files = {f.path for f in mc.list_artifacts(logged.parent_run_id)}
    assert {"lineage.json", "metrics.json", "plots"} <= parent_files

    for name, row in validation_report.metrics.items():
        tracked = logged.candidates[name]
        run = mc.get_run(tracked.run_id)
        for key, value in row.items():  # numbers are metrics, strings (hardware, batch note) are tags
            if isinstance(value, str):
                assert key in ("backend", "precision") or run.data.tags[key] == value, key
            elif isinstance(value, list):  # a bootstrap interval: its two ends are metrics
                assert [run.data.metrics[f"{key}_low"], run.data.metrics[f"{key}_high"]] == value, (name, key)
            else:
                assert run.data.metrics[key] == pytest.approx(float(value)), (name, key)
        assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"holdout-labelled", "holdout-frames"}
        plots = {f.path for f in mc.list_artifacts(tracked.run_id, "plots")}
        if row["role"] == GEOMETRY_ROLE:  # FP32 at the INT8 geometry: numbers only, never timed nor deployed
            assert plots == set() and "latency_p50_ms" not in run.data.metrics, name
            continue
        assert run.data.tags["cpu_model"] == row["cpu_model"]
        expected = {"plots/latency.png", "plots/pr_curve.png"}
        if name != "fp32":
            expected.add("plots/agreement_grid.png")
        assert plots == expected, name
        local = Path(mc.download_artifacts(tracked.run_id, "plots/latency.png", str(tmp_path)))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # registry versions carry the run's tags (lineage and hardware)
        mv = mc.get_model_version(store.tracking.registered_model, tracked.version)
        for key in ("frames_hash", "videos_sha256", "dvc_rev", "git_commit", "cpu_model", "candidate"):
            assert mv.tags[key] == run.data.tags[key], key


def test_report_of_the_latest_rebuild(store: Params, logged, tmp_path: Path, cli) -> None:
    chart = log_tradeoff(store.tracking, store.promote, store.build.reference, logged.parent_run_id)  # as the flow
    assert not chart.decided and {p.name for p in chart.points} == set(logged.candidates) - {"fp32@192x320"}
    assert {(d.name, d.kind) for d in chart.drops} >= {
        ("ov-int8", "quant_map_drop"),
        ("fp32@192x320", "geometry_map_drop"),
    }
    assert {p.name: p.role for p in chart.points}["ov-int8"] == "peer"  # Ultralytics' export, from the run's tag
    view = load_rebuild(store.tracking)
    assert view.run_id == logged.parent_run_id
    assert [c.name for c in view.candidates] == list(logged.candidates) and len(logged.candidates) >= 3
    folder = write_report(store.tracking, view, tmp_path / "reports")
    html = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    for text in (html, md):
        assert "agreement mAP50-95" in text and "ov-int8" in text and view.lineage["frames_hash"] in text
    assert (folder / "images" / "ov-int8" / "agreement_grid.png").is_file()
    assert 'src="images/ov-int8/agreement_grid.png"' in html
    assert "not decided" in md  # no promotion ran: no gate verdict is invented
    # the trade-off chart heads the report (its first picture), and the MLflow link opens the runs table
    assert html.index('src="images/tradeoff.png"') < html.index('<img src="images/ov-int8')
    assert md.index("](images/tradeoff.png)") < md.index("](images/ov-int8/")
    assert (folder / "images" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    url = experiment_url(store.tracking.uri, view.experiment_id)
    assert url.endswith(f"/#/experiments/{view.experiment_id}?workflowType=machine_learning")
    assert f'href="{url}"' in html and url in md
    assert "engine memory (MB, engine alone)" in md

    # the CLI: an explicit run id, rich table on stdout, files under --reports
    done = cli(store.paths.videos.parents[1], "--params", str(write_params(store, tmp_path)), "report",
               logged.parent_run_id, "--reports", str(tmp_path / "cli-reports"))  # fmt: skip
    assert "agreement mAP50-95" in done.stdout and "ort-int8" in done.stdout
    assert (tmp_path / "cli-reports" / logged.parent_run_id / "report.html").is_file()
    assert f"report: {tmp_path / 'cli-reports' / logged.parent_run_id / 'report.html'}" in done.stdout  # a result
    # --json: the schema `report --help` documents, on stdout alone
    done = cli(store.paths.videos.parents[1], "--params", str(write_params(store, tmp_path)), "report", "--json",
               "--reports", str(tmp_path / "json-reports"))  # fmt: skip
    doc = json.loads(done.stdout)
    assert doc["run_id"] == logged.parent_run_id and doc["url"] == url
    assert [c["name"] for c in doc["candidates"]] == list(logged.candidates)
    assert all(c["passed"] is None and c["metrics"] for c in doc["candidates"])  # no promotion ran: not decided
    assert Path(doc["report"]["html"]).is_file() and Path(doc["report"]["md"]).is_file()
    bad = cli(tmp_path, "--params", str(write_params(store, tmp_path)), "report", "nope", check=False)
    assert bad.returncode == 3 and "not found" in bad.stderr


def write_params(store: Params, tmp_path: Path) -> Path:
    """A params.yaml pointing at this test's MLflow store."""
    import yaml

    root = store.paths.videos.parents[1]
    doc = yaml.safe_load((root / "params.yaml").read_text())
    doc["tracking"]["uri"] = store.tracking.uri
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
