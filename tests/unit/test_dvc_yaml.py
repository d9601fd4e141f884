"""dvc.yaml names the code each stage depends on: a moved or renamed module must move there too, or `dvc commit`
(which every rebuild runs) fails on a dependency that does not exist."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_code_dependency_of_a_stage_exists() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    code = {(name, dep) for name, stage in stages.items() for dep in stage.get("deps", []) if not dep.startswith("${")}
    assert code, "dvc.yaml names no code dependency"
    missing = sorted((name, dep) for name, dep in code if not (ROOT / dep).is_file())
    assert not missing, f"dvc.yaml stages depend on files that do not exist: {missing}"
