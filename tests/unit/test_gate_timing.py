"""The gate's latency: the engine's own device time feeds `latency_p50_ms` (and so the speed-up), the end-to-end
time of a call is reported beside it, and whether the clocks were pinned is recorded. The CUDA event timing itself
needs the gate's GPU; checked here: which samples feed which metric, the CUDA event calls against a real libcudart,
and the clock reading on a sysfs tree laid out as a Jetson's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_decoder_refusals import PLATE, model

from tasks.edge.detect import time_model
from tasks.edge.gate_build import clock_state
from tasks.edge.runners import OnnxRuntimeRunner


class EngineTimed(OnnxRuntimeRunner):
    """An ONNX Runtime runner that also reports a device time per execution, as `TensorRTRunner.time_engine` does."""

    def time_engine(self, batch: np.ndarray, warmup: int, runs: int) -> list[float]:
        assert batch.shape == (1, 3, *self.input_hw) and batch.dtype == np.float32
        return [0.25 + 0.01 * i for i in range(runs)]


def test_the_engines_device_time_feeds_latency_and_the_call_time_is_reported_beside_it(tmp_path: Path) -> None:
    onnx = model(tmp_path / "m.onnx", [1, 5, 32], PLATE)
    frame = np.full((64, 128, 3), 80, dtype=np.uint8)
    metrics, samples = time_model(EngineTimed(onnx), warmup=1, runs=5, frame=frame)
    assert samples == pytest.approx([0.25, 0.26, 0.27, 0.28, 0.29])
    assert metrics["latency_p50_ms"] == 0.27 and metrics["latency_p95_ms"] == pytest.approx(0.288)
    assert metrics["e2e_latency_p50_ms"] > 0 and metrics["e2e_latency_p50_ms"] != metrics["latency_p50_ms"]
    plain, e2e = time_model(OnnxRuntimeRunner(onnx), warmup=1, runs=5, frame=frame)  # no engine time: the call's
    assert plain["latency_p50_ms"] == plain["e2e_latency_p50_ms"] and len(e2e) == 5


def test_cuda_events_are_created_through_libcudart_and_fail_typed_without_a_gpu() -> None:
    """The event calls of the engine timing against a real libcudart (pip's, as on a pip-only host): the symbols
    resolve and, with no GPU here, the first call's CUDA error is TensorRTUnavailable with its status."""
    import ctypes

    from tasks.edge.runners import CudaEvents
    from tasks.edge.tensorrt import TensorRTUnavailable, pip_cudart_dirs

    dirs = pip_cudart_dirs()
    if not dirs:
        pytest.skip("no pip CUDA runtime wheel in this environment (PyTorch without CUDA wheels)")
    cudart = ctypes.CDLL(str(sorted(dirs[0].glob("libcudart.so*"))[0]))
    for symbol in ("cudaEventCreate", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime"):
        assert hasattr(cudart, symbol)
    with pytest.raises(TensorRTUnavailable, match=r"cudaEventCreate: CUDA runtime error \d+"):
        CudaEvents(cudart)


def jetson_sysfs(root: Path, cpu_min: str, gpu_min: str) -> Path:
    """cpufreq policies of 6 cores and an Orin GPU's devfreq node (JetPack 6: 17000000.gpu), max 1728/1300 MHz."""
    for i in range(6):
        folder = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_min_freq").write_text(f"{cpu_min}\n")
        (folder / "scaling_max_freq").write_text("1728000\n")
    gpu = root / "sys/class/devfreq/17000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "min_freq").write_text(f"{gpu_min}\n")
    (gpu / "max_freq").write_text("1300500000\n")
    (root / "sys/class/devfreq/3d00000.pcie").mkdir()  # not the GPU: ignored
    return root


def test_clocks_pinned_by_jetson_clocks_are_recorded_as_pinned(tmp_path: Path) -> None:
    pinned = clock_state(jetson_sysfs(tmp_path / "pinned", "1728000", "1300500000"))
    assert pinned["clocks_pinned"] and pinned["cpu"] and pinned["gpu"]
    dvfs = clock_state(jetson_sysfs(tmp_path / "dvfs", "115200", "1300500000"))
    assert not dvfs["clocks_pinned"] and not dvfs["cpu"] and dvfs["gpu"]
    assert "CPU min=max on 0/6 cpufreq policies" in dvfs["detail"]
    gpu_free = clock_state(jetson_sysfs(tmp_path / "gpu", "1728000", "306000000"))
    assert not gpu_free["clocks_pinned"] and gpu_free["cpu"] and "GPU min=max on 0/1" in gpu_free["detail"]
    nothing = clock_state(tmp_path / "empty")  # not a Jetson: nothing says the clocks were pinned
    assert not nothing["clocks_pinned"] and "0/0 devfreq devices" in nothing["detail"]
