"""What a user reads when a step fails: the task's facts, then what to run or change (tasks never name commands)."""

from __future__ import annotations

from tasks.support.config import ConfigError
from tasks.support.errors import AlprError, Remedy

ADVICE: dict[Remedy, str] = {
    Remedy.SAMPLE_VIDEOS: (
        "Put readable gate videos there (for a demo: `alpr-ops sample-videos`), or pass --videos DIR."
    ),
    Remedy.FETCH_MODEL: (
        "Run `alpr-ops fetch-model` (or `dvc pull`). A file that does not match the pin is corrupt or another model: "
        "delete it first, or update model.sha256 in params.yaml if the change is intended."
    ),
    Remedy.EXTRACT: "Run `alpr-ops extract` first (with the same --out/--data paths as the failing command).",
    Remedy.BUILD: "Run `alpr-ops build` first (on the hardware the artifact is for).",
    Remedy.VALIDATE: "Run `alpr-ops validate` (or `alpr-ops rebuild`) with this code version.",
    Remedy.REBUILD: "Run `alpr-ops rebuild` first.",
    Remedy.FORCE_REBUILD: "`alpr-ops rebuild --force` rebuilds anyway.",
    Remedy.PROMOTE: "Run `alpr-ops rebuild` (or `alpr-ops promote` after one) first.",
    Remedy.REBUILD_OR_ROLLBACK: (
        "Rebuild with the new videos (`alpr-ops rebuild`); if no candidate passes, `alpr-ops rollback`."
    ),
    Remedy.HOLDOUT: (
        "Create a labelled holdout (images/ + YOLO labels/; `alpr-ops sample-videos` writes a synthetic one) "
        "or pass --holdout DIR."
    ),
    Remedy.PARAMS: "Fix params.yaml (or pass --params FILE).",
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
        return f"{error}\nRun from the project folder or pass --params PATH."
    if isinstance(error, AlprError | ConfigError) and remedy in ADVICE:
        facts = getattr(error, "facts", {})
        return f"{error}\n{ADVICE[remedy].format_map(_Facts(facts))}"
    return str(error)


class _Facts(dict):
    """An error's facts for its advice; a fact the error did not carry reads as a placeholder, never a crash."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"
