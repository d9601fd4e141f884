"""Issue items 1 and 8, the pure parts: links and Prefect parameters never hold the tracking URI's credentials; a
redacted URI takes them from the machine's environment; a sqlite store gets the README's 20 s busy wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.support.config import Params, TrackingConfig
from tasks.support.tracking import STORE_WAIT_S, StoreMissing, experiment_url, require_store, resolve_uri, store_uri

URI = "http://alice:S3cretPw0rd@127.0.0.1:5055"


def test_the_experiment_link_holds_no_credentials() -> None:
    url = experiment_url(URI, "7")
    assert url == "http://127.0.0.1:5055/#/experiments/7?workflowType=machine_learning"
    assert experiment_url("sqlite:////srv/mlflow.db", "7").startswith("http://127.0.0.1:5000/#/experiments/7")


def test_prefect_records_the_params_with_the_uri_redacted() -> None:
    """Prefect serializes a flow's parameters with FastAPI's `jsonable_encoder` (pydantic's JSON mode)."""
    from fastapi.encoders import jsonable_encoder

    params = Params(tracking=TrackingConfig(uri=URI))
    assert jsonable_encoder({"params": params})["params"]["tracking"]["uri"] == "http://***@127.0.0.1:5055"
    assert "S3cretPw0rd" not in params.model_dump_json()
    assert params.tracking.uri == URI and params.model_dump()["tracking"]["uri"] == URI  # in Python: the real one


def test_a_redacted_uri_takes_its_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(URI) == URI  # not redacted: as written
    # MLflow then reads MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
    assert resolve_uri("http://***@127.0.0.1:5055") == "http://127.0.0.1:5055"
    with pytest.raises(StoreMissing, match="MLFLOW_TRACKING_URI"):
        resolve_uri("https://h:1/?token=***")  # nothing to strip: only the environment can say
    monkeypatch.setenv("MLFLOW_TRACKING_URI", URI)
    assert resolve_uri("http://***@127.0.0.1:5055") == URI


def test_a_sqlite_store_gets_the_busy_wait_and_must_exist_to_be_read(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    assert store_uri(f"sqlite:///{db}") == f"sqlite:///{db}?timeout={STORE_WAIT_S}"
    assert store_uri(f"sqlite:///{db}?timeout=3") == f"sqlite:///{db}?timeout=3"  # the user's own wait wins
    assert store_uri(URI) == URI
    cfg = TrackingConfig(uri=f"sqlite:///{db}")
    with pytest.raises(StoreMissing, match=f"tracking.uri sqlite:///{db} names no MLflow store: {db} does not"):
        require_store(cfg)
    assert not db.exists()
    db.write_bytes(b"")
    require_store(cfg)
    require_store(TrackingConfig(uri=URI))  # a server: nothing to check here
