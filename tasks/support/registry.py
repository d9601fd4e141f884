"""Model-registry helpers for promotion: aliases, version lookup and artifact download.

Every version is named explicitly, by number or by alias (`challenger`, `champion`, `previous`); nothing here ever
falls back to "the latest version", which would deploy whatever was registered last, tested or not.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.support.config import redact_uri
from tasks.support.errors import AlprError
from tasks.support.faults import checkpoint

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"


@dataclass(frozen=True)
class Aliases:
    """The aliases describing one gate folder. Each gate folder has its own (`champion-<gate id>`, ...; the id is
    stored in the folder, tasks/runtime/releases.py), so promoting or rolling back one gate never moves another's."""

    champion: str
    previous: str
    challenger: str


def aliases_for(gate_id: str) -> Aliases:
    """The aliases of the gate folder whose id is `gate_id`."""
    return Aliases(f"{CHAMPION}-{gate_id}", f"{PREVIOUS}-{gate_id}", f"{CHALLENGER}-{gate_id}")


LEGACY = Aliases(CHAMPION, PREVIOUS, CHALLENGER)  # project-wide, before aliases were scoped: adopted on upgrade


class RegistryError(AlprError):
    """The model registry could not be read or written: an error, never to be taken for "no such alias"."""


def store_of(mc: Any) -> str:
    """The registry `mc` talks to, credentials redacted, for messages: as configured (`tracking.uri`) for a client of
    `tasks.support.tracking.client`."""
    shown = getattr(mc, "_shown", None)
    return shown if isinstance(shown, str) else redact_uri(str(getattr(mc, "_registry_uri", None) or mc.tracking_uri))


def model_aliases(mc: Any, name: str) -> dict[str, str]:
    """Every alias of registered model `name` and the version it names ({} only when there is no such model). Any
    failure raises `RegistryError` naming the store, as in `version_by_alias`."""
    try:
        models = mc.search_registered_models(filter_string=f"name = '{name}'")
        model = next((m for m in models if m.name == name), None)
        return {} if model is None else {a: str(v) for a, v in (model.aliases or {}).items()}
    except Exception as e:
        raise _unreadable(mc, name, e) from e


def version_by_alias(mc: Any, name: str, alias: str) -> Any | None:
    """The model version holding `alias`; None only when the registered model does not exist or, read from the
    model itself, has no such alias. Any other failure (a locked database, an unreachable server) raises
    `RegistryError` naming the store: "could not read" must never pass for "there is no champion"."""
    try:
        models = mc.search_registered_models(filter_string=f"name = '{name}'")
        model = next((m for m in models if m.name == name), None)
        if model is None:
            return None
        version = (model.aliases or {}).get(alias)
        return None if version is None else mc.get_model_version(name, str(version))
    except Exception as e:
        raise _unreadable(mc, f"{name}@{alias}", e) from e


def _unreadable(mc: Any, what: str, e: Exception) -> RegistryError:
    store = store_of(mc)
    raw = str(getattr(mc, "_registry_uri", "") or "")
    why = str(e).replace(raw, store) if raw else str(e)
    return RegistryError(
        f"the model registry at {store} could not be read ({what}): {type(e).__name__}: {why}. "
        "Nothing was changed; re-run when the store is reachable."
    )


def set_alias(mc: Any, name: str, alias: str, version: str) -> None:
    mc.set_registered_model_alias(name, alias, str(version))
    log.info("registry: %s@%s -> version %s", name, alias, version)


def delete_alias(mc: Any, name: str, alias: str) -> None:
    """Remove `alias` if it is set (a no-op otherwise)."""
    if version_by_alias(mc, name, alias) is not None:
        mc.delete_registered_model_alias(name, alias)
        log.info("registry: %s@%s removed", name, alias)


def crown(mc: Any, name: str, version: str, aliases: Aliases) -> str | None:
    """Make `version` the gate's champion; the old champion (if another version) becomes `previous`. Returns the
    old one.

    `previous` is set first: a crash between the two calls leaves the old champion reachable under both aliases,
    never under none (and the next promotion reconciles them with the deployed release).
    """
    old = version_by_alias(mc, name, aliases.champion)
    old_version = str(old.version) if old is not None else None
    if old_version is not None and old_version != str(version):
        set_alias(mc, name, aliases.previous, old_version)
        checkpoint("after_previous")
    set_alias(mc, name, aliases.champion, str(version))
    return old_version


def download_version(source: str, dst: Path, tracking_uri: str) -> Path:
    """Download a version's artifact folder (its `source` URI) into `dst` (which must not exist); returns `dst`."""
    import mlflow.artifacts

    from tasks.support.tracking import bound_waits, store_uri

    bound_waits()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dst.parent) as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=store_uri(tracking_uri))
        downloaded = Path(tmp) / source.rstrip("/").rsplit("/", 1)[-1]
        downloaded.rename(dst)
    return dst
