"""Model-registry helpers for promotion: aliases, version lookup and artifact download.

Every version is named explicitly, by number or by alias (`challenger`, `champion`, `previous`); nothing here ever
falls back to "the latest version", which would deploy whatever was registered last, tested or not.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"


def version_by_alias(mc: Any, name: str, alias: str) -> Any | None:
    """The model version holding `alias`, or None when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return mc.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(mc: Any, name: str, alias: str, version: str) -> None:
    mc.set_registered_model_alias(name, alias, str(version))
    log.info("registry: %s@%s -> version %s", name, alias, version)


def delete_alias(mc: Any, name: str, alias: str) -> None:
    """Remove `alias` if it is set (a no-op otherwise)."""
    if version_by_alias(mc, name, alias) is not None:
        mc.delete_registered_model_alias(name, alias)
        log.info("registry: %s@%s removed", name, alias)


def crown(mc: Any, name: str, version: str) -> str | None:
    """Make `version` the champion; the old champion (if another version) becomes `previous`. Returns the old one.

    `previous` is set first: a crash between the two calls leaves the old champion reachable under both aliases,
    never under none.
    """
    old = version_by_alias(mc, name, CHAMPION)
    old_version = str(old.version) if old is not None else None
    if old_version is not None and old_version != str(version):
        set_alias(mc, name, PREVIOUS, old_version)
    set_alias(mc, name, CHAMPION, str(version))
    return old_version


def download_version(source: str, dst: Path, tracking_uri: str) -> Path:
    """Download a version's artifact folder (its `source` URI) into `dst` (which must not exist); returns `dst`."""
    import mlflow.artifacts

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dst.parent) as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri)
        downloaded = Path(tmp) / source.rstrip("/").rsplit("/", 1)[-1]
        downloaded.rename(dst)
    return dst
