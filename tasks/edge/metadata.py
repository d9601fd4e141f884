"""Our build metadata embedded in the artifact itself, whatever its format: ONNX metadata_props, OpenVINO rt_info,
TensorRT engine header (all under `META_KEY`). A copied or downloaded artifact still says what it was built from.

Beside the runtimes that read it: the gate side imports this module too (Python 3.10, no PyTorch), so ONNX and
OpenVINO are imported inside the functions that need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.edge.tensorrt import read_engine, write_engine
from tasks.support.candidate import META_KEY, openvino_xml


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
        return read_engine(artifact)[0].get(META_KEY, {})
    return {}
