"""What a user reads when a step fails: the task's facts, then what to run or change (tasks never name commands).

Advice names settings by their params.yaml key (each `paths.*` key is also every command's flag of the same name,
cli/options.py) and commands with flags that exist: tests/unit/test_cli_advice.py checks every text here."""

from __future__ import annotations

from tasks.support.config import ConfigError
from tasks.support.errors import AlprError, Remedy

ADVICE: dict[Remedy, str] = {
    Remedy.SAMPLE_VIDEOS: (
        "Put readable gate videos in paths.videos (`alpr-ops init --from DIR` copies yours; for a demo, "
        "`alpr-ops sample-videos` writes synthetic ones), or point paths.videos at them."
    ),
    Remedy.FETCH_MODEL: (
        "Run `alpr-ops fetch-model` (or `dvc pull`). A file that does not match the pin is corrupt or another model: "
        "delete it first, or update model.sha256 in params.yaml if the change is intended."
    ),
    Remedy.EXTRACT: (
        "Run `alpr-ops extract` first, with the same paths.calibration, paths.calibration_yaml and "
        "paths.holdout_frames as the failing command (in params.yaml, or the flags of the same names)."
    ),
    Remedy.BUILD: "Run `alpr-ops build` first (on the hardware the artifact is for).",
    Remedy.VALIDATE: "Run `alpr-ops validate` (or `alpr-ops rebuild`) with this code version.",
    Remedy.REBUILD: "Run `alpr-ops rebuild` first.",
    Remedy.FORCE_REBUILD: "`alpr-ops rebuild --force` rebuilds anyway.",
    Remedy.PROMOTE: "Run `alpr-ops rebuild` (or `alpr-ops promote` after one) first.",
    Remedy.REBUILD_OR_ROLLBACK: (
        "Rebuild with the new videos (`alpr-ops rebuild`); if no candidate passes, `alpr-ops rollback`."
    ),
    Remedy.HOLDOUT: (
        "Make a labelled holdout of your footage (`alpr-ops label propose`, review, then `alpr-ops label pull` or "
        "`alpr-ops label import DIR`), point paths.holdout at an existing one (images/ + YOLO labels/), or set "
        "validate.labels: optional in params.yaml to judge candidates on agreement with FP32 alone."
    ),
    Remedy.PARAMS: "Fix params.yaml (or pass `alpr-ops --params FILE` for another one).",
    Remedy.WAIT: "Wait for it to finish, then run again.",
    Remedy.REPLACE_DATA: (
        "Use a fresh clone, or run `alpr-ops init --force` to replace the videos (DVC keeps the old ones in its cache)."
    ),
    Remedy.GATE_WORKER: (
        "Deploy the gate flow (`alpr-ops deploy` with build.backend: tensorrt), then start a worker of the gate's pool "
        "on the gate box: `prefect worker start --pool {pool}` (docs/tensorrt.md)."
    ),
    Remedy.OUTPUT_FOLDER: (
        "Point that setting in params.yaml (or the command's flag) at a new or empty folder, or move your files out "
        "of this one: alpr-ops replaces only folders it made (they hold a `.alpr-ops-output` file)."
    ),
    Remedy.CACHE: (
        "Make that folder writable for the user running alpr-ops, or point the setting at a writable folder: a cache "
        "holds only what can be made again, so a new, empty one is safe."
    ),
}


def explain(error: BaseException) -> str:
    """The error's message, and on the next line what to do about it (when the error's type says)."""
    remedy = getattr(error, "remedy", None)
    if isinstance(error, ConfigError) and "not found" in str(error):
        return f"{error}\nRun from the project folder or pass `alpr-ops --params PATH`."
    if isinstance(error, AlprError | ConfigError) and remedy in ADVICE:
        facts = getattr(error, "facts", {})
        return f"{error}\n{ADVICE[remedy].format_map(_Facts(facts))}"
    return str(error)


class _Facts(dict):
    """An error's facts for its advice; a fact the error did not carry reads as a placeholder, never a crash."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"
