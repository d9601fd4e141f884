"""What a rebuild was made from: the code (git commit), the DVC state, the videos (content hashes, as tables), the
frames and the base model; and the same inputs as MLflow dataset inputs of the rebuild's runs.

`tasks/pipeline/track.py` records these on the rebuild's runs; the nightly check reads the videos back from the
parent run's `lineage.json`.
"""

from __future__ import annotations

import functools
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.support.config import Params
from tasks.support.hashing import sha256_bytes, sha256_file
from tasks.support.images import list_images
from tasks.support.videos import VideoInput, list_videos

if TYPE_CHECKING:
    import pandas as pd

    from tasks.pipeline.validate import ValidationReport


def git_commit(repo: Path) -> str:
    """The commit the code ran at (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def dvc_rev(repo: Path) -> str:
    """The git commit that last changed `dvc.lock` (the DVC pipeline state), plus the lock file's own sha256."""
    lock = repo / "dvc.lock"
    if not lock.is_file():
        return "no dvc.lock"
    digest = sha256_file(lock)[:12]
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", "dvc.lock"], cwd=repo, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return f"uncommitted (dvc.lock sha256 {digest})"
    return f"{done.stdout.strip() or 'uncommitted'} (dvc.lock sha256 {digest})"


@functools.lru_cache(maxsize=1024)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, remembered per (path, mtime, size): lineage and datasets of one rebuild hash each video
    once, not once per use (gate videos are large)."""
    return sha256_file(Path(path))


def video_table(videos_dir: Path) -> pd.DataFrame:
    """One row per video file: name, size, sha256 (the rebuild's input list, for lineage and MLflow datasets)."""
    import pandas as pd

    videos, _ = list_videos(videos_dir)
    rows = []
    for v in videos:
        st = v.stat()
        rows.append(
            {"video": v.name, "size_bytes": float(st.st_size), "sha256": _sha256(str(v), st.st_mtime_ns, st.st_size)}
        )
    return pd.DataFrame(rows, columns=["video", "size_bytes", "sha256"])


def snapshot_table(inputs: Sequence[VideoInput]) -> pd.DataFrame:
    """The `video_table` of the videos as extraction read them (`ExtractResult.inputs`), not as the folder is now:
    a video copied in during the rebuild is not one of its inputs."""
    import pandas as pd

    rows = [{"video": i.name, "size_bytes": float(i.size_bytes), "sha256": i.sha256} for i in inputs]
    return pd.DataFrame(rows, columns=["video", "size_bytes", "sha256"])


def image_table(images: list[Path]) -> pd.DataFrame:
    """One row per image: name and sha256 (holdout and agreement frames as MLflow datasets)."""
    import pandas as pd

    return pd.DataFrame([{"image": p.name, "sha256": sha256_file(p)} for p in images], columns=["image", "sha256"])


def table_hash(table: pd.DataFrame) -> str:
    """Order-independent sha256 of a table's rows."""
    lines = sorted("\t".join(str(v) for v in row) for row in table.itertuples(index=False))
    return sha256_bytes("\n".join(lines).encode())


def lineage(
    repo: Path,
    frames_hash: str,
    base_model_sha256: str,
    videos_dvc: Path,
    videos_dir: Path | None = None,
    inputs: Sequence[VideoInput] | None = None,
) -> dict[str, str]:
    """Tags that say exactly what a rebuild was made from: code, DVC state, videos (hashes), frames, model. The
    videos are the extraction's snapshot (`inputs`) when given, else `videos_dir` as it is now."""
    tags = {"git_commit": git_commit(repo), "frames_hash": frames_hash, "base_model_sha256": base_model_sha256}
    tags["dvc_rev"] = dvc_rev(repo)
    table = None
    if inputs is not None:
        table = snapshot_table(inputs)
    elif videos_dir is not None and videos_dir.is_dir():
        table = video_table(videos_dir)
    if table is not None:
        tags["videos_count"] = str(len(table))
        tags["videos_sha256"] = table_hash(table)
        tags["videos"] = ", ".join(f"{r.video}:{r.sha256[:12]}" for r in table.itertuples())[:4900]
    if videos_dvc.is_file():
        import yaml

        outs = (yaml.safe_load(videos_dvc.read_text()) or {}).get("outs") or [{}]
        tags["videos_dvc_md5"] = str(outs[0].get("md5", "unknown"))
    else:
        tags["videos_dvc_md5"] = f"untracked (no {videos_dvc.name})"
    return tags


def _dataset_input(table: pd.DataFrame, name: str, source: Path, context: str) -> Any:
    """An MLflow dataset input (what `mlflow.log_input` logs), built from a pandas table, for `log_inputs`."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():  # schema inference hints about integer columns: not relevant to a file list
        warnings.simplefilter("ignore")
        dataset = mlflow.data.from_pandas(table, source=str(source), name=name)
        entity = dataset._to_mlflow_entity()
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def rebuild_datasets(
    params: Params, report: ValidationReport | None, inputs: Sequence[VideoInput] | None = None
) -> tuple[list[Any], list[Any]]:
    """MLflow dataset inputs: (for the parent run) videos (the extraction's snapshot `inputs` when given),
    calibration frames, holdout, agreement frames; (for each candidate run) the holdout and agreement frames it was
    evaluated on."""
    import pandas as pd

    from tasks.pipeline.validate import agreement_images, holdout_images

    p = params.paths
    parent, child = [], []
    if inputs is not None:
        parent.append(_dataset_input(snapshot_table(inputs), "gate-videos", p.videos, "source"))
    elif p.videos.is_dir():
        parent.append(_dataset_input(video_table(p.videos), "gate-videos", p.videos, "source"))
    manifest = p.calibration / "manifest.csv"
    if manifest.is_file():
        parent.append(_dataset_input(pd.read_csv(manifest), "calibration-frames", manifest, "calibration"))
    images = holdout_images(p.holdout, params.model.names, params.validate_.labels)
    if images:
        child.append(_dataset_input(image_table(images), "holdout-labelled", p.holdout, "evaluation"))
    # the frames agreement actually used: the report's, else what validation would pick from params
    source = report.agreement_source if report is not None else agreement_images(p.holdout_frames, images)[1]
    if source != "none" and not source.startswith("labelled"):  # an unlabelled set, not the labelled holdout again
        frames = list_images(Path(source))
        child.append(_dataset_input(image_table(frames), "holdout-frames", Path(source), "agreement"))
    return parent + child, child
