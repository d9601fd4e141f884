"""Content-addressed build cache, and the metadata embedded in every artifact.

A candidate's key hashes everything that shapes its artifact: the base model, the calibration frames, the
candidate's own params, the image size and the toolchain (OpenVINO/NNCF, ONNX Runtime, TensorRT, GPU name). An
unchanged rebuild reuses the artifact without exporting; any change is a new key and a fresh build, so a calibration
made on other frames can never be reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from tasks.support.candidate import openvino_xml
from tasks.support.fsutil import atomic_dir

log = logging.getLogger(__name__)

# ONNX metadata_props key, OpenVINO rt_info section, and the only key of ours in a TensorRT engine header (which
# Ultralytics' backend applies key by key as attributes of itself: tests/unit/test_tensorrt_files.py checks the name)
META_KEY = "alpr_ops"


def cache_key(
    base_model_sha256: str, frames_hash: str, candidate: dict[str, Any], imgsz: int, toolchain: dict[str, str]
) -> str:
    """sha256 over every input that shapes a candidate's artifact (canonical JSON, sorted keys)."""
    doc = {
        "base_model_sha256": base_model_sha256,
        "frames_hash": frames_hash,
        "candidate": candidate,
        "imgsz": imgsz,
        "toolchain": toolchain,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lookup(cache_dir: Path | None, key: str, meta_name: str) -> Path | None:
    """The cached folder for `key` when it is complete (its metadata file says the same key), else None."""
    if cache_dir is None:
        return None
    entry = cache_dir / key
    meta = entry / meta_name
    if not meta.is_file():
        return None
    try:
        if json.loads(meta.read_text()).get("cache_key") != key:
            return None
    except json.JSONDecodeError:
        return None
    return entry


def store(cache_dir: Path | None, key: str, folder: Path) -> None:
    """Copy a built candidate folder into the cache under `key` (atomically: a crash leaves no half entry)."""
    if cache_dir is None:
        return
    with atomic_dir(cache_dir / key) as tmp:
        copy_tree(folder, tmp)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of `src` into the existing folder `dst`, keeping modification times."""
    for item in src.iterdir():
        if item.is_dir():
            shutil.copytree(item, dst / item.name, copy_function=shutil.copy2)
        else:
            shutil.copy2(item, dst / item.name)


# --- metadata embedded in artifacts ---------------------------------------------------------------------------------


def embed_metadata(artifact: Path, meta: dict[str, Any]) -> None:
    """Write `meta` into the artifact itself: ONNX metadata_props, OpenVINO rt_info, TensorRT engine header."""
    text = json.dumps(meta, sort_keys=True)
    if artifact.suffix == ".onnx":
        import onnx

        model = onnx.load(str(artifact))
        for prop in [p for p in model.metadata_props if p.key == META_KEY]:
            model.metadata_props.remove(prop)
        model.metadata_props.add(key=META_KEY, value=text)
        onnx.save(model, str(artifact))
    elif artifact.is_dir() and artifact.name.endswith("_openvino_model"):
        import openvino as ov

        xml = openvino_xml(artifact)
        model = ov.Core().read_model(xml)
        model.set_rt_info(text, [META_KEY, "metadata"])
        tmp = xml.with_name(f".{xml.stem}-meta.xml")
        ov.save_model(model, tmp, compress_to_fp16=False)
        tmp.replace(xml)
        tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
    elif artifact.suffix == ".engine":
        from tasks.runtime.tensorrt import read_engine, write_engine

        header, engine = read_engine(artifact)  # merged into what the header holds under META_KEY (the device)
        write_engine(artifact, {**header, META_KEY: {**(header.get(META_KEY) or {}), **meta}}, engine)
    else:
        raise ValueError(f"{artifact}: no known way to embed metadata in this artifact type")


def read_embedded_metadata(artifact: Path) -> dict[str, Any]:
    """The metadata `embed_metadata` wrote into the artifact ({} if there is none)."""
    if artifact.suffix == ".onnx":
        import onnx

        model = onnx.load(str(artifact), load_external_data=False)
        found = [p.value for p in model.metadata_props if p.key == META_KEY]
        return json.loads(found[0]) if found else {}
    if artifact.is_dir():
        import openvino as ov

        model = ov.Core().read_model(openvino_xml(artifact))
        if not model.has_rt_info([META_KEY, "metadata"]):
            return {}
        return json.loads(model.get_rt_info([META_KEY, "metadata"]).astype(str))
    if artifact.suffix == ".engine":
        from tasks.runtime.tensorrt import read_engine

        return read_engine(artifact)[0].get(META_KEY, {})
    return {}
