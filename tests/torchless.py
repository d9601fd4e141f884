"""A fresh Python interpreter in which PyTorch cannot be imported, as on the gate box (JetPack's Python has no
PyTorch from PyPI): the gate's tests run their gate side there, so a stray `import torch` fails them instead of
passing in a test process that loaded PyTorch long before (the fixtures' host builds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("torch", "torchvision", "ultralytics")  # not on the gate (Ultralytics needs PyTorch)

# run first in the interpreter: a meta path finder ahead of every other refuses the gate's absent packages, the
# way a missing package fails (ModuleNotFoundError), whatever this venv has installed
NO_TORCH = f"""\
import sys as _sys


class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (the gate has no PyTorch)", name=name)
        return None


_sys.meta_path.insert(0, _Absent())
"""


def run_without_torch(
    code: str, *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` (with `args` in sys.argv[1:]) in a fresh interpreter of this venv from the project root, PyTorch,
    torchvision and Ultralytics unimportable."""
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH + code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
