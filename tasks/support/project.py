"""A project folder as a deployment sees it: `params.yaml` parsed at run time, optional overrides, one rebuild at once.

Deployments take a params file rather than parsed parameters, so an edit to `params.yaml` applies to the next run
without redeploying; this is the edge where that file is parsed.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.support.config import ConfigError, Params, load_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Project:
    params: Params
    root: Path  # the folder of params.yaml
    dvc_root: Path | None  # set when the run writes the paths dvc.yaml describes (so `dvc commit` may record them)


def select_candidates(params: Params, names: list[str]) -> Params:
    """`params` with only the named candidates (the reference is always kept: every gate compares with it)."""
    declared = [c.name for c in params.build.candidates]
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ConfigError(f"unknown candidate(s) {unknown}: params.yaml build.candidates declares {declared}")
    keep = set(names) | {params.build.reference}
    build = params.build.model_copy(update={"candidates": [c for c in params.build.candidates if c.name in keep]})
    return params.model_copy(update={"build": build})


def load_project(
    params_file: Path,
    videos: Path | None = None,
    holdout: Path | None = None,
    gate_dir: Path | None = None,
    candidates: list[str] | None = None,
) -> Project:
    """Parse `params_file` and apply a run's overrides (a videos folder, a subset of candidates)."""
    base = load_params(params_file)
    params = base
    paths = {k: v.resolve() for k, v in {"videos": videos, "holdout": holdout}.items() if v is not None}
    if paths:
        params = params.model_copy(update={"paths": params.paths.model_copy(update=paths)})
    if gate_dir is not None:
        promote = params.promote.model_copy(update={"gate_dir": gate_dir.resolve()})
        params = params.model_copy(update={"promote": promote})
    if candidates:
        params = select_candidates(params, candidates)
    root = params_file.resolve().parent
    in_dvc = (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()
    # dvc.lock may record the outputs only when the run used the paths and candidates dvc.yaml's stages describe
    return Project(params, root, root if in_dvc and params == base else None)


def rebuild_running(lock_file: Path | None) -> bool:
    """Whether a rebuild holds the project's lock (`rebuild_lock`), without waiting for it."""
    if lock_file is None or not lock_file.exists():
        return False
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


@contextmanager
def rebuild_lock(lock_file: Path) -> Iterator[None]:
    """Hold the project's rebuild lock; a second rebuild on the same data waits here (queues) until the first ends.

    An OS lock (flock) is released by the kernel when its holder dies, so a killed rebuild never blocks the next.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            log.warning("another rebuild (%s) is running on this project; waiting for it to finish", holder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
