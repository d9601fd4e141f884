"""Keep Ultralytics, OpenVINO, MLflow, Prefect and DVC off the network and from pip-installing at run time.

Gate build machines reach no model hub. Each library below reaches out on its own unless told not to; these settings
were measured to stop it. `configure_offline` must run before `ultralytics` is first imported (it reads the
environment at import), so the CLI calls it first thing and tasks import Ultralytics lazily.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

OFFLINE_ENV: dict[str, str] = {
    "YOLO_OFFLINE": "1",  # Ultralytics: no start-up connectivity probe, no asset downloads
    "YOLO_AUTOINSTALL": "false",  # Ultralytics: never pip-install a missing export dependency
    "YOLO_VERBOSE": "false",  # Ultralytics: no per-image progress bars (its warnings are turned back on below)
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # honoured by MLflow and several others
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "MPLBACKEND": "Agg",  # no display on build machines
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one progress bar of ours per step
}

# Ultralytics' settings: no syncing, and no logging of its own into MLflow/DVC (the workflow logs itself).
# Keys a given Ultralytics release does not have are skipped (that integration does not exist there).
ULTRALYTICS_SETTINGS: dict[str, bool] = {
    "sync": False,
    "mlflow": False,
    "dvc": False,
    "wandb": False,
    "tensorboard": False,
    "clearml": False,
    "comet": False,
    "raytune": False,
    "vscode_msg": False,
    "openvino_msg": False,
}


def set_offline_env() -> None:
    """Set `OFFLINE_ENV`, even where the environment says otherwise (e.g. `YOLO_OFFLINE=0`): being offline is not
    optional here. Cheap (no imports), so every CLI command calls it, not only those that load Ultralytics."""
    for key, value in OFFLINE_ENV.items():
        if os.environ.get(key, value).lower() != value.lower():  # Prefect writes back "False" for "false"
            log.warning("overriding %s=%s with %s (alpr-ops runs offline)", key, os.environ[key], value)
        os.environ[key] = value


def configure_offline(config_dir: Path) -> None:
    """Set the offline environment and give Ultralytics a local font so plotting never fetches Arial.ttf.

    `config_dir` becomes `YOLO_CONFIG_DIR` unless the caller already set one.
    """
    set_offline_env()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    _install_font(font_dir / "Arial.ttf")
    _disable_openvino_telemetry()
    from ultralytics.utils import LOGGER, SETTINGS

    # YOLO_VERBOSE=false also hides Ultralytics' warnings (e.g. an argument it changed on its own): show those.
    LOGGER.setLevel(logging.WARNING)
    for handler in LOGGER.handlers:
        handler.setLevel(logging.WARNING)

    wanted = {**ULTRALYTICS_SETTINGS, "runs_dir": str(Path(os.environ["YOLO_CONFIG_DIR"]) / "runs")}
    changed = {k: v for k, v in wanted.items() if k in SETTINGS and SETTINGS[k] != v}
    if changed:
        SETTINGS.update(changed)


def _install_font(target: Path) -> None:
    """Copy matplotlib's DejaVu Sans where Ultralytics looks for Arial.ttf (it downloads it otherwise)."""
    if target.exists():
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    log.debug("installed %s as %s", source, target)


def _disable_openvino_telemetry() -> None:
    """Opt out of OpenVINO/NNCF telemetry the way its own `opt_in_out --opt_out` does (a consent file with 0)."""
    consent = Path.home() / "intel" / "openvino_telemetry"
    if consent.exists() and consent.read_text().strip() == "0":
        return
    try:
        consent.parent.mkdir(parents=True, exist_ok=True)
        consent.write_text("0")
    except OSError as e:  # a read-only home: telemetry then has no consent file and stays off in CI mode only
        log.warning("could not write the OpenVINO telemetry opt-out file %s: %s", consent, e)
