"""The candidate artifact: a built model in its own folder, with `candidate.json` saying what it is and what it
was built from. Build writes it; validation, tracking, promotion, the nightly check and the gate read it here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.support.errors import AlprError, Remedy

CANDIDATE_JSON = "candidate.json"
# the key our build metadata is embedded under in every artifact (tasks/edge/metadata.py): ONNX metadata_props,
# OpenVINO rt_info section, and the only key of ours in a TensorRT engine header (which Ultralytics' backend applies
# key by key as attributes of itself: tests/unit/test_tensorrt_files.py checks the name)
META_KEY = "alpr_ops"
BUILT_ON_GATE = "gate"  # `tensorrt.built_on` of a candidate whose engine the gate's worker builds from its ONNX


class CandidateMissing(AlprError):
    """A candidate that should have been built has no `candidate.json`."""

    remedy = Remedy.BUILD


@dataclass(frozen=True)
class Candidate:
    """A built artifact and what it was built from (also written beside it as `candidate.json`)."""

    name: str
    backend: str
    precision: str
    folder: Path
    artifact: str  # relative to `folder`: a file (.onnx, .engine) or a folder (OpenVINO IR)
    sha256: str
    size_mb: float
    base_model_sha256: str
    frames_hash: str
    imgsz: int
    toolchain: dict[str, str]
    build_seconds: float
    built_at: str
    method: str = "ultralytics"
    cache_key: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # the candidate's entry of build.candidates
    quantization: dict[str, Any] = field(default_factory=dict)  # gate, layers kept in float (our methods)
    # TensorRT engines: the plain plan beside the `.engine` and what it was built for (tasks.edge.tensorrt
    # `engine_record`); empty for other backends and for candidates built before it was recorded
    # or, built with build.tensorrt_on: gate, {"built_on": "gate", ...}: at build time the artifact is the ONNX the
    # gate builds the engine from (never run nor deployed by the host); once the gate measured it, the registered
    # artifact is the gate's engine, checked against the gate's record (tasks/pipeline/track.py register_gate_engine)
    tensorrt: dict[str, Any] = field(default_factory=dict)
    # the engine's input (height, width): the camera's aspect for INT8 candidates built with build.shape: camera
    # (tasks/support/shape.py); a candidate.json written before it was recorded was built square at `imgsz`
    input_shape: tuple[int, ...] = ()  # (height, width); () is read as (imgsz, imgsz)
    # the region of interest the engine is built for (tasks/support/roi.py): every frame is cropped to `crop`
    # (x1, y1, x2, y2 frame pixels) before the letterbox, and boxes are mapped back; () is the full frame.
    # `frame_shape` (height, width): the frame size the crop applies to; () for a full-frame engine
    crop: tuple[int, ...] = ()
    frame_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.input_shape) or (int(self.imgsz), int(self.imgsz))
        if len(shape) != 2:
            raise ValueError(f"{self.name}: input_shape must be [height, width], got {list(self.input_shape)}")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        object.__setattr__(self, "frame_shape", tuple(int(v) for v in self.frame_shape))
        if self.crop and (len(self.crop) != 4 or len(self.frame_shape) != 2):
            raise ValueError(f"{self.name}: crop must be [x1, y1, x2, y2] with a frame_shape [height, width]")

    @property
    def path(self) -> Path:
        return self.folder / self.artifact

    @property
    def gate_built(self) -> bool:
        """The engine is built on the gate: on the host after build, `path` is its ONNX, which is not what ships;
        the registered version holds the gate's engine."""
        return self.tensorrt.get("built_on") == BUILT_ON_GATE

    def to_json(self) -> str:
        data = asdict(self)
        data["folder"] = "."
        return json.dumps(data, indent=2, sort_keys=True)


def openvino_xml(path: Path) -> Path:
    """The model file of an OpenVINO IR: `path` when it is the .xml, else the one .xml in the folder `path` (as
    Ultralytics and NNCF write an IR). Every loader of an IR finds it here, so they all refuse the same folders."""
    if path.suffix == ".xml" and path.is_file():
        return path
    xmls = sorted(path.glob("*.xml"))
    if len(xmls) != 1:
        raise ValueError(f"{path}: expected one OpenVINO .xml, found {[p.name for p in xmls] or 'none'}")
    return xmls[0]


def read_candidate(folder: Path) -> Candidate:
    """The candidate in `folder`, from its `candidate.json` (the folder may have moved since it was built)."""
    data = json.loads((folder / CANDIDATE_JSON).read_text())
    data["folder"] = folder
    return Candidate(**data)


def load_candidates(out_dir: Path, names: list[str]) -> list[Candidate]:
    """Read back built candidates (`out_dir/<name>/`), in the order given."""
    found = []
    for name in names:
        if not (out_dir / name / CANDIDATE_JSON).is_file():
            raise CandidateMissing(f"{out_dir / name / CANDIDATE_JSON}: candidate '{name}' has not been built")
        found.append(read_candidate(out_dir / name))
    return found
