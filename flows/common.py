"""What every entry flow starts with: the offline settings, and `params.yaml` parsed once into a `Project`."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.support import offline
from tasks.support.project import Overrides, Project, load_project

stay_offline = task(offline.configure_offline, name="offline", cache_policy=NO_CACHE)
parse_params = task(load_project, name="load-project", cache_policy=NO_CACHE)


def open_project(params_file: str, overrides: Overrides | None, project: Project | None) -> Project:
    """The run's project: the one the caller parsed, or `params_file` parsed here, once. Then offline settings."""
    if project is None:
        project = parse_params(Path(params_file), overrides)
    stay_offline(project.params.paths.ultralytics_config)
    return project
