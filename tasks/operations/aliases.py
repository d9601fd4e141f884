"""A gate folder's registry aliases kept true to what it runs: the repair of aliases a killed promotion or rollback
left behind, the recovery of a lost `gate.json`, and the adoption of a gate folder and its releases deployed before
scoped aliases and verification."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tasks.operations.provenance import recorded
from tasks.runtime.releases import (
    GATE_ID_FILE,
    GATE_ID_KEY,
    MANIFEST,
    VERIFIED_KEY,
    GateFolderError,
    current_release,
    ensure_gate_id,
    gate_paths,
    promotion_lock,
    read_manifest,
)
from tasks.support.config import TrackingConfig
from tasks.support.fsutil import atomic_write_text
from tasks.support.registry import (
    CHAMPION,
    LEGACY,
    Aliases,
    aliases_for,
    crown,
    delete_alias,
    model_aliases,
    set_alias,
    version_by_alias,
)
from tasks.support.tracking import client
from tasks.support.verify import VerificationError, verify_artifact

log = logging.getLogger(__name__)


def reconcile(mc: Any, tracking: TrackingConfig, gate_dir: Path, names: Aliases) -> tuple[str, ...]:
    """Make the aliases agree with what the gate runs; returns (and logs) each repair. Called under the promotion
    lock only (outside it, it would "repair" a promotion in progress).

    The deployed manifest (`current`) is the truth: promotion and rollback switch `current` first and move the
    aliases after, so a killed run leaves the aliases behind, never ahead. Only a `current` inside `releases/` is:
    `current_release` refuses any other, so a folder outside never becomes the truth the aliases are moved to. A
    `previous` equal to the deployed version means a rollback to it was interrupted (its champion moves, `previous`
    is cleared); any other disagreement is an interrupted promotion (`crown` the deployed version: the old champion
    becomes `previous`).
    """
    release = current_release(gate_dir)
    if release is None:
        return ()
    deployed = str(read_manifest(release)["version"])
    name = tracking.registered_model
    champ, prev = (version_by_alias(mc, name, a) for a in (names.champion, names.previous))
    c, p = (None if mv is None else str(mv.version) for mv in (champ, prev))
    repairs: list[str] = []
    if c != deployed and p == deployed:
        set_alias(mc, name, names.champion, deployed)
        delete_alias(mc, name, names.previous)
        repairs.append(f"champion {c} -> {deployed} and previous removed (a rollback to {deployed} was interrupted)")
    elif c != deployed:
        crown(mc, name, deployed, names)
        repairs.append(
            f"champion {c} -> {deployed}"
            + (f", previous -> {c}" if c is not None else "")
            + f" (a promotion of {deployed} was interrupted after the switch)"
        )
    elif p == deployed:
        delete_alias(mc, name, names.previous)
        repairs.append(f"previous {p} removed: it is the champion (a rollback was interrupted)")
    for repair in repairs:
        log.warning("reconciled %s with %s (the deployed release is the truth): %s", name, release, repair)
    return tuple(repairs)


def open_gate(mc: Any, tracking: TrackingConfig, gate_dir: Path) -> tuple[Aliases, tuple[str, ...]]:
    """Under the promotion lock: the gate folder's aliases (its id is created on first use) and what was adopted
    from a version before scoped aliases and verified releases. A gate folder deployed before has no id: it takes
    over the project-wide `champion`/`previous` when the project-wide champion is what it runs (otherwise its
    champion is set from its deployed release by `reconcile`), and every release without a verification record
    is checked against the hash its MLflow run and registry version recorded: adopted when it matches, left
    unverified (never loaded) when not. A lost `gate.json` is recovered first (`ensure_gate_id`: the releases'
    manifests, else `id_from_registry`)."""
    release = current_release(gate_dir)  # first: a `current` leading outside releases/ refuses before any write
    gid, created = ensure_gate_id(gate_dir, lambda: id_from_registry(mc, tracking, gate_dir))
    names, name, done = aliases_for(gid), tracking.registered_model, []
    if created and release is not None:
        deployed = str(read_manifest(release)["version"])
        old_c, old_p = (version_by_alias(mc, name, a) for a in (LEGACY.champion, LEGACY.previous))
        if old_c is not None and str(old_c.version) == deployed:
            set_alias(mc, name, names.champion, deployed)
            if old_p is not None:
                set_alias(mc, name, names.previous, str(old_p.version))
            previous = "" if old_p is None else f", {LEGACY.previous} {old_p.version} as {names.previous}"
            done.append(f"upgrade: adopted the project-wide {LEGACY.champion} {deployed} as {names.champion}{previous}")
        else:
            done.append(
                f"upgrade: the project-wide {LEGACY.champion} "
                f"({'none' if old_c is None else old_c.version}) is not what {gate_dir} runs ({deployed}); not "
                f"adopted (its {names.champion} is set from the deployed release)"
            )
    done += adopt_releases(mc, tracking, gate_dir, gid)
    for line in done:
        log.warning("%s", line)
    return names, tuple(done)


def id_from_registry(mc: Any, tracking: TrackingConfig, gate_dir: Path) -> str | None:
    """The id of a gate folder whose `gate.json` is lost and whose manifests predate recording it, from the registry:
    the one id whose `champion-<id>` names the version `current` runs. Only for a folder promotion verified (a
    manifest with a verification record: it had an id); a folder from before scoped aliases gets a new one, as on
    upgrade. Several candidates, or a champion that is not the deployed release, are refused: adopting another
    folder's id would move that folder's aliases."""
    releases = sorted(gate_paths(gate_dir).releases.glob("v*"))
    if not any(_manifest_or_empty(r).get(VERIFIED_KEY) for r in releases):
        return None
    release = current_release(gate_dir)
    deployed = None if release is None else str(_manifest_or_empty(release).get("version"))
    here = {r.name[1:] for r in releases}
    prefix = f"{CHAMPION}-"
    champions = {
        a.removeprefix(prefix): v
        for a, v in model_aliases(mc, tracking.registered_model).items()
        if a.startswith(prefix)
    }
    running = sorted(i for i, v in champions.items() if v == deployed)
    if len(running) == 1:
        return running[0]
    others = sorted(i for i, v in champions.items() if v in here)
    if not running and not others:
        return None
    fits = ", ".join(f"{i} (champion v{champions[i]})" for i in (running or others))
    raise GateFolderError(
        f"{gate_dir / GATE_ID_FILE}: missing, its releases' manifests do not record the id, and the registry's aliases "
        f"of '{tracking.registered_model}' do not single one out: {fits} "
        f"{'all run' if running else 'name releases in this folder but not'} the deployed version {deployed}. Write "
        f'this folder\'s id into it ({{"id": "<id>"}}); a new id starts without a previous version to roll back to'
    )


def adopt_releases(mc: Any, tracking: TrackingConfig, gate_dir: Path, gid: str | None = None) -> list[str]:
    """Releases deployed before verification existed: record the hash their MLflow run and registry version
    recorded at build time when the artifact matches it; refuse (leave unverified, so never loaded) when not. Each
    verified manifest also gets the folder's id `gid` when it lacks it (deployed before manifests recorded it)."""
    done = []
    for release in sorted(gate_paths(gate_dir).releases.glob("v*")):
        try:
            manifest = read_manifest(release)
        except VerificationError as e:
            done.append(f"upgrade: {release.name} not adopted: {e}")
            continue
        if manifest.get(VERIFIED_KEY):
            if gid is not None and manifest.get(GATE_ID_KEY) is None:  # recovers a lost gate.json from here on
                atomic_write_text(
                    release / MANIFEST, json.dumps({**manifest, GATE_ID_KEY: gid}, indent=2, sort_keys=True)
                )
            continue
        try:
            rec = recorded(mc, tracking, str(manifest["run_id"]), str(manifest["version"]))
            cand = verify_artifact(release, rec.sha256, rec.where)
        except (VerificationError, KeyError) as e:
            done.append(f"upgrade: {release.name} NOT adopted and will not be loaded: {e}")
            continue
        manifest.update({"sha256": rec.sha256, "artifact": cand.artifact, VERIFIED_KEY: f"{rec.where}, on upgrade"})
        if gid is not None:
            manifest[GATE_ID_KEY] = gid
        atomic_write_text(release / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        done.append(f"upgrade: {release.name} adopted (its artifact matches {rec.where})")
    return done


def adopt_at_gate_start(tracking: TrackingConfig, gate_dir: Path) -> tuple[str, ...]:
    """Before the gate runtime starts: when a release in `gate_dir` has no verification record (deployed before
    the upgrade), adopt what can be adopted (`open_gate`, under the promotion lock) and say what was done. A gate
    whose releases are all verified never contacts the registry here."""
    unverified = [r for r in gate_paths(gate_dir).releases.glob("v*") if not _manifest_or_empty(r).get(VERIFIED_KEY)]
    if not unverified:
        return ()
    with promotion_lock(gate_dir):
        return open_gate(client(tracking), tracking, gate_dir)[1]


def _manifest_or_empty(release: Path) -> dict[str, Any]:
    try:
        return read_manifest(release)
    except VerificationError:
        return {}
