import os
from pathlib import Path

from tasks.config import PromoteConfig
from tasks.promote import current_release, decide, prune_releases, switch_current


def row(drop: float, p50: float) -> dict[str, float]:
    return {"map_drop": drop, "latency_p50_ms": p50}


def test_fastest_passing_candidate_wins() -> None:
    metrics = {
        "fp32": row(0.0, 30.0),
        "ov-int8": row(0.056, 17.0),
        "ort-int8": row(-0.006, 46.0),
        "ours": row(0.006, 18),
    }
    decision = decide(metrics, PromoteConfig(max_map_drop=0.01))
    assert decision.winner == "ours"
    assert not decision.verdicts["ov-int8"].passed
    assert "0.0560 > 0.01" in decision.verdicts["ov-int8"].reasons[0]
    assert decision.verdicts["fp32"].passed and decision.verdicts["ort-int8"].passed


def test_no_winner_when_nothing_passes() -> None:
    decision = decide({"a": row(0.2, 5.0), "b": row(0.02, 6.0)}, PromoteConfig(max_map_drop=0.01))
    assert decision.winner is None
    assert "a: FAIL" in decision.explain() and "b: FAIL" in decision.explain()


def test_switch_current_is_a_symlink_rename(tmp_path: Path) -> None:
    for v in ("v1", "v2"):
        (tmp_path / "releases" / v).mkdir(parents=True)
    assert current_release(tmp_path) is None
    switch_current(tmp_path, tmp_path / "releases" / "v1")
    assert current_release(tmp_path) == (tmp_path / "releases" / "v1").resolve()
    switch_current(tmp_path, tmp_path / "releases" / "v2")
    assert os.readlink(tmp_path / "current") == "releases/v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "releases"]


def test_prune_keeps_current_and_newest(tmp_path: Path) -> None:
    for i in range(1, 5):
        (tmp_path / "releases" / f"v{i}").mkdir(parents=True)
        os.utime(tmp_path / "releases" / f"v{i}", (i, i))
    switch_current(tmp_path, tmp_path / "releases" / "v1")
    prune_releases(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == ["v1", "v3", "v4"]
