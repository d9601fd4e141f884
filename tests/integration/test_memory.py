"""The engine-memory probe (tasks/runtime/memory.py) tells candidates apart: the same runtime, FP32 vs INT8 weights."""

from __future__ import annotations

import pytest

from tasks.runtime.memory import engine_memory, probe

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_int8_engine_takes_less_memory_than_fp32_on_the_same_runtime(built: tuple) -> None:
    params, candidates = built
    by_name = {c.name: c for c in candidates}
    fp32, int8 = by_name["fp32"], by_name["ort-int8"]  # both ONNX Runtime: only the engine differs
    got = {
        c.name: engine_memory(c.backend, c.path, c.imgsz, params.validate_.memory_frames, params.validate_.threads)
        for c in (fp32, int8)
    }
    for name, row in got.items():
        assert row["engine_rss_mb"] > row["runtime_rss_mb"] > 0, name
        assert row["engine_mb"] == pytest.approx(row["engine_rss_mb"] - row["runtime_rss_mb"], abs=0.11), name
        assert row["memory_input_shape"] == "1x3x{}x{}".format(*by_name[name].input_shape), name
    # the same runtime alone weighs the same in both processes; the engines do not
    assert got["fp32"]["runtime_rss_mb"] == pytest.approx(got["ort-int8"]["runtime_rss_mb"], abs=5)
    saved = got["fp32"]["engine_mb"] - got["ort-int8"]["engine_mb"]
    assert saved > 0.5 * (fp32.size_mb - int8.size_mb), got  # at least half of the weights' difference
    assert engine_memory("tensorrt", fp32.path, fp32.imgsz, 1, 1).keys() == {"memory_note"}  # no number faked


def test_the_probe_refuses_to_measure_a_process_holding_torch(built: tuple) -> None:
    import torch  # noqa: F401  (this test process has it: the probe must say so rather than report its memory)

    _, candidates = built
    fp32 = next(c for c in candidates if c.name == "fp32")
    with pytest.raises(RuntimeError, match="imported \\['torch'"):
        probe(fp32.backend, fp32.path, fp32.imgsz, 1, 1)
