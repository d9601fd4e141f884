"""What runs on the gate box (JetPack 6: Python 3.10, TensorRT in the system Python, no PyTorch): the gate-side
modules import neither PyTorch nor Ultralytics, and nothing they import needs Python 3.11 (checked with vermin)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torchless import run_without_torch

ROOT = Path(__file__).resolve().parents[2]

# the gate's entry points; everything of ours they import is checked too
GATE_MODULES = sorted(
    [f"tasks.edge.{p.stem}" for p in (ROOT / "tasks" / "edge").glob("*.py") if p.stem != "__init__"]
    + ["tasks.runtime.gate", "flows.gate_build"]
)
FORBIDDEN = ("torch", "torchvision", "ultralytics")


def tiny_detector(path: Path) -> Path:
    """An ONNX model shaped like an Ultralytics detect export: images (1, 3, 32, 64) -> (1, 4 + 1 class, 32 anchors)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 5, 32], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Reshape", ["c", "shape"], ["output0"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 32])],
        [weights, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def imported_by_gate_modules(release: Path) -> dict[str, list[str]]:
    """In a fresh interpreter where PyTorch cannot be imported (as on the gate): import every gate module, load
    `release` the way the gate does and run it on a frame, and refuse an engine built for another GPU; which
    forbidden packages and which of our files that loaded."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {GATE_MODULES!r}: importlib.import_module(m)\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from tasks.edge import tensorrt\n"
        "from tasks.runtime import gate\n"
        f"loaded = gate.load_release(Path({str(release)!r}))\n"
        "assert loaded.model.input_hw == (32, 64), loaded.model.input_hw\n"
        "loaded.model(np.full((90, 160, 3), 80, dtype=np.uint8))\n"
        "device = {'gpu': 'Orin', 'compute_capability': '8.7', 'tensorrt': '10.3.0'}\n"
        "engine = tensorrt.save_engine(Path(sys.argv[1]) / 'm.engine', tensorrt.with_device({}, device), b'x')[0]\n"
        "try:\n"
        "    gate.ensure_runnable(engine)\n"
        "except tensorrt.EngineMismatch:\n"
        "    pass\n"
        "ours = sorted({m.__file__ for n, m in list(sys.modules.items())"
        " if n.split('.')[0] in ('tasks', 'flows') and getattr(m, '__file__', None)})\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(json.dumps({'forbidden': bad, 'files': ours}))\n"
    )
    out = run_without_torch(code, str(release.parent), timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gate_imports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    release = tmp_path_factory.mktemp("gate") / "v1"
    release.mkdir()
    import hashlib

    sha = hashlib.sha256(tiny_detector(release / "model.onnx").read_bytes()).hexdigest()
    cand = {
        "name": "tiny", "backend": "onnxruntime", "precision": "fp32", "folder": ".", "artifact": "model.onnx",
        "sha256": sha, "size_mb": 0.0, "base_model_sha256": "", "frames_hash": "", "imgsz": 64, "toolchain": {},
        "build_seconds": 0.0, "built_at": "", "input_shape": [32, 64],
    }  # fmt: skip
    (release / "candidate.json").write_text(json.dumps(cand))
    manifest = {"version": "1", "sha256": sha, "artifact": "model.onnx", "verified_against": "test (run r, v 1)"}
    (release / "manifest.json").write_text(json.dumps(manifest))
    return imported_by_gate_modules(release)


def test_gate_side_modules_import_neither_pytorch_nor_ultralytics(gate_imports: dict[str, list[str]]) -> None:
    assert "tasks.edge.detect" in GATE_MODULES and "tasks.runtime.gate" in GATE_MODULES
    assert gate_imports["forbidden"] == [], "the gate box has no PyTorch (nor Ultralytics, which needs it)"


def vermin(*files: str | Path) -> subprocess.CompletedProcess[str]:
    """vermin's verdict for Python 3.10 (`--target=3.10-`: 3.10 or older must suffice), violations only."""
    run_vermin = "import sys; from vermin import main; sys.exit(main())"  # this environment's vermin
    cmd = [sys.executable, "-c", run_vermin, "--target=3.10-", "--no-tips", "--violations", "--eval-annotations"]
    return subprocess.run([*cmd, *map(str, files)], capture_output=True, text=True, timeout=300)


def test_gate_side_code_runs_on_python_3_10(gate_imports: dict[str, list[str]], tmp_path: Path) -> None:
    files = gate_imports["files"]
    assert any(f.endswith("tasks/edge/detect.py") for f in files) and len(files) > 8
    found = vermin(*files)
    assert found.returncode == 0, f"needs more than Python 3.10:\n{found.stdout}{found.stderr}"
    newer = tmp_path / "newer.py"  # the check can fail: 3.11-only syntax and modules are reported
    newer.write_text("import tomllib\n\ntry:\n    pass\nexcept* ValueError:\n    pass\n")
    refused = vermin(newer)
    assert refused.returncode != 0 and "tomllib" in refused.stdout and "except*" in refused.stdout


def test_without_tensorrt_the_engine_paths_fail_typed_before_any_gpu_work(tmp_path: Path) -> None:
    """No TensorRT here: the runner, the device query and the engine build each stop with `TensorRTUnavailable`
    (what the host reports as a failed candidate), never an AttributeError half way."""
    import importlib.util

    from tasks.edge.runners import open_runner
    from tasks.edge.tensorrt import TensorRTUnavailable, build_strongly_typed_engine, device_info

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the refusal does not apply")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"\x00plan")
    with pytest.raises(TensorRTUnavailable, match="TensorRT cannot run here"):
        open_runner(plan)
    with pytest.raises(TensorRTUnavailable, match="TensorRT cannot run here"):
        device_info()
    with pytest.raises(TensorRTUnavailable, match="TensorRT cannot build here"):
        build_strongly_typed_engine(tmp_path / "m.onnx", tmp_path / "m.engine", metadata={})
    assert not (tmp_path / "m.engine").exists()


def test_the_gates_interpreter_cannot_import_pytorch_though_this_venv_has_it() -> None:
    """The checks above can fail: in `run_without_torch`, `import torch` (installed in this venv) fails, as on the
    gate."""
    import importlib.util

    assert importlib.util.find_spec("torch") is not None
    out = run_without_torch("import torch\n")
    assert out.returncode != 0 and "ModuleNotFoundError: No module named 'torch'" in out.stderr


def test_the_tensorrt_tests_collect_without_pytorch_where_tensorrt_imports(tmp_path: Path) -> None:
    """`tests/integration/test_tensorrt.py` decides at collection whether an engine can be built here. Where
    `tensorrt` imports (a stand-in package here), it probes the GPU through the gate's own device query, never
    PyTorch: on a machine without PyTorch it still collects, and skips with the device query's reason."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text('__version__ = "10.3.0"\n')
    code = (
        "import importlib.util, json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "spec = importlib.util.spec_from_file_location('t', 'tests/integration/test_tensorrt.py')\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps([module.HAVE_TRT, module.SKIP_REASON]))\n"
    )
    out = run_without_torch(code, str(tmp_path))
    assert out.returncode == 0, out.stderr
    have, reason = json.loads(out.stdout.strip().splitlines()[-1])
    assert have is False
    assert "no CUDA GPU" in reason and "TensorRT cannot run here" in reason  # Polygraphy is not installed here
