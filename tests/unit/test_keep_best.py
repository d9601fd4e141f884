"""Which model our NNCF build keeps after its recovery steps (tasks/pipeline/quantize.py `_keep_best`)."""

from __future__ import annotations

import pytest

from tasks.pipeline.quantize import GateResult, _keep_best, _Tried

pytestmark = pytest.mark.timeout(30)


def _tried(step: str, agreement: float, scope: set[str], max_drop: float = 0.01) -> _Tried:
    return _Tried(step, model=step, result=GateResult(0.995, agreement, max_drop), scope=frozenset(scope))


def test_a_search_that_ends_below_where_it_started_keeps_the_earlier_model() -> None:
    # the demo at 416x640: 0.9848 first (drop 0.0102, failed by 0.0002), the search's four more float convs 0.9769
    first = _tried("first", 0.9848, {"a"})
    searched = _tried("requantize_final_scope", 0.9769, {"a", "b", "c", "d", "e"})
    assert _keep_best([first, searched]) is first


def test_the_first_passing_model_is_kept_fewest_layers_in_float() -> None:
    first = _tried("first", 0.90, {"a"})
    head = _tried("head_scope", 0.986, {"a", "b"})
    searched = _tried("requantize_final_scope", 0.99, {"a", "b", "c"})
    assert _keep_best([first, head, searched]) is head
    assert _keep_best([first, searched]) is searched  # recovery that passes wins over a failing start


def test_when_none_passes_the_most_faithful_is_kept_the_earlier_on_a_tie() -> None:
    first = _tried("first", 0.90, {"a"})
    head = _tried("head_scope", 0.95, {"a", "b"})
    tie = _tried("nncf_accuracy_control", 0.95, {"a", "b", "c"})
    assert _keep_best([first, head, tie]) is head
    assert _keep_best([first]) is first
