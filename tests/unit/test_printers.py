"""The candidate table a rebuild ends with: every row's drops with their intervals, and the legend under it."""

from __future__ import annotations

import pytest


def test_the_candidate_table_shows_each_drop_with_its_interval_and_its_legend(capsys: pytest.CaptureFixture) -> None:
    from cli.printers import print_candidates

    rows = [
        {"name": "fp32", "role": "accuracy reference", "precision": "fp32", "backend": "onnxruntime",
         "input_shape": "640x640", "map50_95": 0.665, "map_drop": 0.0, "map_drop_ci": [0.0, 0.0], "passed": False},
        {"name": "ov-int8-mixed", "role": "candidate", "precision": "int8", "backend": "openvino",
         "input_shape": "320x544", "map50_95": 0.698, "map_drop": -0.033, "map_drop_ci": [-0.063, 0.003],
         "quant_map_drop": -0.001, "quant_map_drop_ci": [-0.018, 0.013], "agreement_map50_95": 0.98, "passed": True},
    ]  # fmt: skip
    print_candidates(rows, None)
    out = capsys.readouterr().out
    assert "320x544" in out and "-0.033" in out and "-0.063" in out and "+0.013" in out, out
    legend = " ".join(out.split())  # the console wraps the legend to its width
    assert "[low, high]: the paired bootstrap's interval (validate.bootstrap_level)" in legend, out
