"""The gate's decoder reads one output layout, (1, 4 + classes, anchors): a model with any other is refused when it
is opened, with what it is, never decoded into silent garbage (tiny real ONNX models on ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.edge.detect import Detector
from tasks.edge.postprocess import UnsupportedModel, check_output, decode, export_names
from tasks.edge.preprocess import Letterbox

PLATE = {"names": "{0: 'plate'}", "end2end": "False", "task": "detect"}  # as Ultralytics' ONNX export stores them


def model(path: Path, output: list, metadata: dict[str, str], images: list | None = None) -> Path:
    """An ONNX model whose declared input is `images` (default (1, 3, 32, 64)) and whose one output is `output`
    (ints, or names for dynamic dimensions): a constant of the output's static shape plus the input's mean, so it
    runs on ONNX Runtime; `metadata` goes to metadata_props as Ultralytics writes it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    static = [d if isinstance(d, int) else 1 for d in output]
    shape = numpy_helper.from_array(np.array(static, dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
            helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=helper.make_tensor("v", 1, [1], [0.5])),
            helper.make_node("Add", ["zeros", "mean"], ["output0"]),
        ],
        "shaped",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, images or [1, 3, 32, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, output)],
        [shape],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in metadata.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, path)
    return path


def test_a_detect_output_matching_its_names_opens_and_decodes(tmp_path: Path) -> None:
    detector = Detector.open(model(tmp_path / "ok.onnx", [1, 5, 32], PLATE))
    assert detector.runner.output_shape == (1, 5, 32)
    assert detector(np.full((64, 128, 3), 80, dtype=np.uint8), conf=0.25).conf  # score 0.5 + mean > 0.25: boxes
    two = model(tmp_path / "two.onnx", [1, 6, 32], {**PLATE, "names": "{0: 'plate', 1: 'car'}"})
    assert Detector.open(two).input_hw == (32, 64)


def test_an_end_to_end_export_is_refused(tmp_path: Path) -> None:
    """YOLO26/YOLOv10-style NMS-free output (1, 300, 6): its metadata says end2end, and even without metadata its
    shape (fewer anchors than channels) is refused."""
    e2e = {**PLATE, "names": "{0: 'plate', 1: 'car'}", "end2end": "True"}  # 4 + 2 classes = 6: the count agrees
    with pytest.raises(UnsupportedModel, match=r"end-to-end \(NMS-free\) export .*end2end=False"):
        Detector.open(model(tmp_path / "e2e.onnx", [1, 300, 6], e2e))
    with pytest.raises(UnsupportedModel, match=r"fewer anchors than channels"):
        Detector.open(model(tmp_path / "bare.onnx", [1, 300, 6], {}))


def test_an_output_whose_class_count_disagrees_with_names_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match=r"2 class scores per anchor, but the export's names list 1 classes"):
        Detector.open(model(tmp_path / "m.onnx", [1, 6, 32], PLATE))
    with pytest.raises(UnsupportedModel, match=r"1 class scores per anchor, but the export's names list 3"):
        check_output((1, 5, 8400), {"names": {"0": "a", "1": "b", "2": "c"}}, "an engine header")  # JSON keys


@pytest.mark.parametrize(
    ("images", "output", "match"),
    [
        (["batch", 3, 32, 64], [1, 5, 32], "dynamic batch dimension"),
        ([1, "channels", 32, 64], [1, 5, 32], "dynamic channel dimension"),
        ([2, 3, 32, 64], [2, 5, 32], "unexpected batch dimension"),
        ([1, 3, "height", 64], [1, 5, 32], "not a fixed NCHW shape"),
    ],
)
def test_dynamic_batch_or_channel_inputs_are_refused(tmp_path: Path, images: list, output: list, match: str):
    with pytest.raises(UnsupportedModel, match=match):
        Detector.open(model(tmp_path / "m.onnx", output, PLATE, images))


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (["batch", 5, 32], "dynamic batch dimension"),  # ONNX's symbolic name
        ([-1, 5, 8400], "dynamic batch dimension"),  # TensorRT's -1
        ([1, None, 8400], "dynamic channel dimension"),  # OpenVINO's dynamic Dimension, as the runner reports it
        ([1, 5], r"expected \(1, 4 \+ classes, anchors\)"),
    ],
)
def test_dynamic_batch_or_channel_outputs_are_refused(output: list, match: str) -> None:
    """ONNX Runtime replaces a symbolic output dimension by the one it infers from a fixed input, so these are the
    shapes as each runtime reports them, through the runners' own normalisation (`_dims`)."""
    from tasks.edge.runners import _dims

    with pytest.raises(UnsupportedModel, match=match):
        check_output(_dims(output), PLATE, "m")


def test_names_are_read_from_every_format_the_metadata_comes_in() -> None:
    assert export_names({"names": "{0: 'plate'}"}) == {0: "plate"}  # ONNX metadata_props (str of a dict)
    assert export_names({"names": {"0": "plate"}}) == {0: "plate"}  # engine header (JSON)
    assert export_names({"names": {0: "plate"}}) == {0: "plate"}  # metadata.yaml
    assert export_names({}) is None and export_names({"names": "not a dict"}) is None


def test_decode_refuses_an_array_that_is_not_one_images_output() -> None:
    box = Letterbox((32, 64), (32, 64))
    with pytest.raises(UnsupportedModel, match=r"\(1, 5, 32\)"):
        decode(np.zeros((1, 5, 32), dtype=np.float32), box, 0.25, 0.7)  # the batch, not one image's output
    assert decode(np.zeros((5, 32), dtype=np.float32), box, 0.25, 0.7).conf == ()
