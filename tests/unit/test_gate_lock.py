"""The gate's locks (`make lock-gate`: every dependency of requirements-gate.txt for Python 3.10 on aarch64 and
x86_64, with each wheel's sha256) checked offline against requirements-gate.txt: what pip resolved online is only
read here, never fetched."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHES = ("aarch64", "x86_64")
NOT_ON_THE_GATE = {"torch", "torchvision", "ultralytics", "tensorrt"}  # tensorrt: JetPack's system package


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """name -> version of `name==version` lines (comments and options dropped)."""
    found = {}
    for line in lines:
        spec = line.split("#", 1)[0].split(" --hash", 1)[0].strip()
        if spec:
            name, sep, version = spec.partition("==")
            assert sep and version, f"not an exact pin: {line!r}"
            found[canonical(name)] = version.strip()
    return found


def direct() -> tuple[list[str], dict[str, str]]:
    lines = (ROOT / "requirements-gate.txt").read_text().splitlines()
    return lines, pins(lines)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_gate_lock_pins_every_direct_requirement_at_its_version_with_hashes(arch: str) -> None:
    lock = ROOT / f"requirements-gate.{arch}.lock"
    assert lock.is_file(), f"{lock.name} missing: run `make lock-gate`"
    text = lock.read_text().splitlines()
    header = [line for line in text if line.startswith("#")]
    body = [line for line in text if line and not line.startswith("#")]
    assert f"for CPython 3.10 on linux {arch}" in header[0]
    lines, wanted = direct()
    specs = sorted(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())
    digest = hashlib.sha256("\n".join(specs).encode()).hexdigest()
    assert f"# requirements-gate.txt pins sha256 {digest}" in header, (
        f"{lock.name} was generated from other pins than requirements-gate.txt has now: run `make lock-gate`"
    )
    locked = pins(body)
    assert len(locked) == len(body), f"{lock.name}: a package pinned twice"
    assert all(re.search(r" --hash=sha256:[0-9a-f]{64}$", line) for line in body), "every pin has its sha256"
    differing = {n: (v, locked.get(n)) for n, v in wanted.items() if locked.get(n) != v}
    assert not differing, f"{lock.name}: direct pins missing or at another version (wanted, locked): {differing}"
    assert len(locked) > 3 * len(wanted)  # the transitive closure, not the direct pins again
    assert not NOT_ON_THE_GATE & set(locked)


def test_the_two_locks_agree_on_every_pure_python_package() -> None:
    """One resolution for two platforms: a package in both locks has one version (wheels differ per platform only
    in their hashes), so the x86_64 lock, which a developer can try, stands for the Jetson's."""
    locks = {arch: pins((ROOT / f"requirements-gate.{arch}.lock").read_text().splitlines()) for arch in ARCHES}
    a, b = locks.values()
    assert set(a) == set(b)
    assert {n: (a[n], b[n]) for n in a if a[n] != b[n]} == {}


def test_a_lock_check_can_fail(tmp_path: Path) -> None:
    assert pins(["numpy==1.26.4 --hash=sha256:" + "0" * 64, "# comment", ""]) == {"numpy": "1.26.4"}
    assert canonical("ruamel.yaml") == canonical("Ruamel_Yaml") == "ruamel-yaml"
    with pytest.raises(AssertionError, match="not an exact pin"):
        pins(["numpy>=1.26"])
