"""A project as a run sees it: `params.yaml` parsed once, with the run's overrides applied in one place.

Every command and flow goes through `load_project`: path flags and deployment parameters become an `Overrides`,
and nothing else changes a path after parsing. Deployments pass the params file rather than parsed parameters, so
an edit to `params.yaml` applies to the next run without redeploying.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from tasks.support.config import ConfigError, Params, PathsConfig, load_params

log = logging.getLogger(__name__)


class Overrides(BaseModel):
    """What a run changes in `params.yaml`: paths (`paths.<key>` by key), the gate folder, and `only` a subset of
    the declared candidates.

    The one way to override anything; `load_project` applies it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    paths: dict[str, Path] = {}
    gate_dir: Path | None = None
    only: tuple[str, ...] = ()

    @field_validator("paths")
    @classmethod
    def _known_paths(cls, paths: dict[str, Path]) -> dict[str, Path]:
        unknown = sorted(set(paths) - set(PathsConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown path override(s) {unknown}; paths are {sorted(PathsConfig.model_fields)}")
        return paths

    @classmethod
    def of(cls, gate_dir: Path | None = None, only: list[str] | None = None, **paths: Path | None) -> Overrides:
        """From optional flags (`paths` by their `paths.<key>` name): None means "as in params.yaml"."""
        given = {k: v for k, v in paths.items() if v is not None}
        return cls(paths=given, gate_dir=gate_dir, only=tuple(only or ()))


@dataclass(frozen=True)
class Project:
    params: Params
    root: Path  # the folder of params.yaml
    dvc_root: Path | None  # set when the run writes the paths dvc.yaml describes (so `dvc commit` may record them)


def select_candidates(params: Params, names: tuple[str, ...]) -> Params:
    """`params` with only the named candidates (the two references are always kept: every gate compares with them)."""
    declared = [c.name for c in params.build.candidates]
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ConfigError(f"unknown candidate(s) {unknown}: params.yaml build.candidates declares {declared}")
    keep = set(names) | {params.build.reference, params.build.speed_reference_name}
    build = params.build.model_copy(update={"candidates": [c for c in params.build.candidates if c.name in keep]})
    return params.model_copy(update={"build": build})


def apply_overrides(params: Params, overrides: Overrides) -> Params:
    """`params` with `overrides` applied (override paths are made absolute against the working folder)."""
    if overrides.paths:
        paths = params.paths.model_copy(update={k: v.resolve() for k, v in overrides.paths.items()})
        params = params.model_copy(update={"paths": paths})
    if overrides.gate_dir is not None:
        promote = params.promote.model_copy(update={"gate_dir": overrides.gate_dir.resolve()})
        params = params.model_copy(update={"promote": promote})
    if overrides.only:
        params = select_candidates(params, overrides.only)
    return params


def load_project(params_file: Path, overrides: Overrides | None = None) -> Project:
    """Parse `params_file` once and apply the run's overrides."""
    base = load_params(params_file)
    params = apply_overrides(base, overrides or Overrides())
    root = params_file.resolve().parent
    in_dvc = (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()
    # dvc.lock may record the outputs only when the run used the paths and candidates dvc.yaml's stages describe
    return Project(params, root, root if in_dvc and params == base else None)
