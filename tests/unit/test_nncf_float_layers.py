"""The layers our NNCF build keeps in float (tasks/pipeline/quantize.py), on a tiny real OpenVINO model: what NNCF's
accuracy-control search reverted, read from the graph (`_reverted_operations`), and the head step's wider scope."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tasks.pipeline.quantize import _reverted_operations

pytestmark = pytest.mark.timeout(120)


def _tiny_model() -> Any:
    """image -> conv `stem` -> relu -> conv `block` -> relu, `residual` Add of both relus -> `pool` -> 1x1 conv
    `head`. NNCF quantizes `head`'s input before the MaxPool (quantize-agnostic), so only its weights show it."""
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)

    def conv(x: Any, cin: int, cout: int, k: int, name: str) -> Any:
        weight = ops.constant(rng.normal(size=(cout, cin, k, k)).astype(np.float32) * 0.2, name=f"{name}.weight")
        pad = [k // 2, k // 2]
        return ops.convolution(x, weight, [1, 1], pad, pad, [1, 1], name=name)

    image = ops.parameter([1, 3, 16, 16], np.float32, name="image")
    stem = ops.relu(conv(image, 3, 8, 3, "stem"), name="stem.act")
    block = ops.relu(conv(stem, 8, 8, 3, "block"), name="block.act")
    residual = ops.add(stem, block, name="residual")
    pool = ops.max_pool(residual, [1, 1], [1, 1], [0, 0], [0, 0], [2, 2], name="pool").output(0)
    return ov.Model([conv(pool, 8, 4, 1, "head")], [image], "tiny")


@pytest.fixture(scope="module")
def quantize() -> Any:
    """`quantize(ignored_names)`: the tiny model quantized by NNCF (mixed preset) with those operations in float."""
    import nncf

    model = _tiny_model()
    rng = np.random.default_rng(1)
    data = nncf.Dataset([rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(4)])

    def run(ignored: list[str]) -> Any:
        return nncf.quantize(
            model,
            data,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=4,
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=ignored),
        )

    return run


def test_a_conv_and_an_add_left_in_float_are_named_from_the_graph(quantize: Any) -> None:
    # what the search's revert looks like in the graph: the conv's weights float again (no FakeQuantize), the Add
    # (quantized on its activations only: a FakeQuantize on each input) without FakeQuantize before it
    before, after = quantize([]), quantize(["block", "residual"])
    assert _reverted_operations(before, after) == ["block", "residual"]
    assert _reverted_operations(before, quantize(["residual"])) == ["residual"]  # activation side alone
    assert _reverted_operations(before, quantize(["head"])) == ["head"]  # weight side alone (not the MaxPool)
    assert _reverted_operations(before, quantize([])) == []
    assert _reverted_operations(before, _tiny_model()) == ["block", "head", "residual", "stem"]  # all of it: FP32
    assert _reverted_operations(after, before) == []  # more quantized afterwards: nothing reverted


def test_the_head_step_keeps_the_configured_types_and_patterns() -> None:
    import nncf

    from tasks.pipeline.quantize import _with_head

    scope = nncf.IgnoredScope(names=["block"], types=["Add"], patterns=["^head$"], validate=False)
    wider = _with_head(_tiny_model(), scope)
    assert (wider.names, wider.types, wider.patterns) == (["block"], ["Add"], ["^head$"])
