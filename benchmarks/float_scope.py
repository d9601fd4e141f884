"""What each layer group our INT8 build keeps in float costs in latency and buys in agreement (issue 16, part 2).

From a project where `alpr-ops rebuild` (or `make demo`) has built our NNCF candidate: take the layers it keeps in
float (`quantization.float_scope` of its `candidate.json`), group them (the box branches' last convs, the class
branches' last convs, the DFL conv, each other conv on its own), and for each group quantize the FP32 IR again with
that group quantized too (everything else as built: same preset, calibration frames and bias correction). Then, in
one process:

- agreement mAP50-95 with FP32 on the project's agreement frames (held-out videos' frames and the labelled holdout),
  computed by the build's own gate (`tasks.pipeline.quantize.AgreementGate`: the one metric, `scoring.score`);
- latency p50 of every variant, ours as built and Ultralytics' OpenVINO INT8 export, timed interleaved (round-robin,
  one run of each per round) on one real frame, 2 threads, OpenVINO's LATENCY hint, as validation times them.

Usage (from the project folder):

    python benchmarks/float_scope.py --params params.yaml [--candidate ov-int8-mixed] [--peer ov-int8] [--runs 60]
                                     [--groups N]   # only the first N groups: each costs a full NNCF run
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("benchmarks.float_scope")

GROUPS = (  # (label, pattern over an op's friendly name); ops no pattern takes are a group of their own
    ("box branches' last convs (cv2.*.2)", r"\.cv2\.\d+\.2/.*Convolution$"),
    ("class branches' last convs (cv3.*.2)", r"\.cv3\.\d+\.2/.*Convolution$"),
    ("DFL conv", r"\.dfl\.conv/.*Convolution$"),
)


def conv_groups(kept: list[str]) -> dict[str, list[str]]:
    """The float-kept convolutions by layer group."""
    groups: dict[str, list[str]] = {}
    for name in kept:
        label = next((lab for lab, pat in GROUPS if re.search(pat, name)), name.split("/")[0].replace("__module.", ""))
        groups.setdefault(label, []).append(name)
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--candidate", default="ov-int8-mixed")
    parser.add_argument("--peer", default="ov-int8")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--groups", type=int, default=None, metavar="N",
        help="re-quantize only the first N layer groups (each costs a full NNCF run; default: every group)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from tasks.support.config import load_params
    from tasks.support.offline import configure_offline

    params = load_params(args.params)
    configure_offline(params.paths.ultralytics_config)

    import nncf
    import openvino as ov

    from tasks.pipeline.build import export_candidate, gate_frame_images
    from tasks.pipeline.quantize import AgreementGate, calibration_images, letterbox, ov_float_convolutions
    from tasks.pipeline.validate import holdout_images
    from tasks.support.candidate import load_candidates, openvino_xml
    from tasks.support.config import CandidateConfig

    nncf.set_log_level(logging.WARNING)
    ours, peer = load_candidates(params.paths.candidates, [args.candidate, args.peer])
    cand_cfg = next(c for c in params.build.candidates if c.name == ours.name)
    nncf_cfg = cand_cfg.nncf_settings
    scope = list(ours.quantization.get("float_scope") or ours.quantization.get("ignored_scope") or [])
    kept = list(ours.quantization.get("kept_in_float") or [])
    imgsz = ours.input_shape  # (height, width): the FP32 IR, calibration and frames at the shape ours was built at
    if (peer.input_shape, peer.crop) != (imgsz, ours.crop):  # both are timed on the same letterboxed frame
        raise SystemExit(
            f"{peer.name} takes {peer.input_shape} of crop {list(peer.crop)}, {ours.name} {imgsz} of crop "
            f"{list(ours.crop)}: compare candidates of one geometry"
        )
    p = params.paths
    region = (ours.crop, ours.frame_shape)  # frames cropped to the region ours was built for, as its build did
    calib = [letterbox(x, imgsz, *region) for x in calibration_images(p.calibration_yaml)[: nncf_cfg.subset_size]]
    agree_paths = gate_frame_images(p.holdout_frames) + holdout_images(p.holdout, list(params.model.names))
    frame = letterbox(agree_paths[0], imgsz, *region)
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": params.validate_.threads}

    with tempfile.TemporaryDirectory(prefix="alpr-float-scope-") as tmp:
        fp32_ir = export_candidate(
            p.model, CandidateConfig(name="fp32-ir", precision="fp32"), "openvino", p.calibration_yaml, imgsz,
            Path(tmp),
        )  # fmt: skip
        fp32 = core.read_model(openvino_xml(fp32_ir))
        fp32_compiled = core.compile_model(fp32, "CPU", config)
        gate = AgreementGate(lambda x: fp32_compiled(x)[0], agree_paths, imgsz, params.validate_, *region)
        preset = nncf.QuantizationPreset.MIXED if nncf_cfg.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE

        def quantize(ignored: list[str]):
            started = time.perf_counter()
            model = nncf.quantize(
                fp32, nncf.Dataset(calib), preset=preset, subset_size=len(calib),
                fast_bias_correction=nncf_cfg.fast_bias_correction,
                ignored_scope=nncf.IgnoredScope(names=sorted(ignored), validate=False),
            )  # fmt: skip
            log.info("quantized with %d ops in float in %.0f s", len(ignored), time.perf_counter() - started)
            return model

        # the base is the built scope quantized here like every variant (in memory), beside the saved IR itself
        variants: dict[str, object] = {"as built": quantize(scope), "as built (saved IR)": core.read_model(
            openvino_xml(ours.path))}  # fmt: skip
        for label, names in list(conv_groups(kept).items())[: args.groups]:
            variants[f"minus {label}"] = quantize([n for n in scope if n not in names])
        variants["no conv in float"] = quantize([n for n in scope if n not in kept])
        variants[f"peer: {peer.name}"] = core.read_model(openvino_xml(peer.path))

        compiled = {name: core.compile_model(m, "CPU", config) for name, m in variants.items()}
        rows: dict[str, dict[str, float]] = {}
        for name, c in compiled.items():
            still = len(ov_float_convolutions(variants[name]))
            rows[name] = {"agreement": gate.score(lambda x, c=c: c(x)[0]), "convs_in_float": still}
        for c in compiled.values():
            for _ in range(args.warmup):
                c(frame)
        times: dict[str, list[float]] = {name: [] for name in compiled}
        for _ in range(args.runs):
            for name, c in compiled.items():
                t0 = time.perf_counter()
                c(frame)
                times[name].append((time.perf_counter() - t0) * 1000)

    base, peer_key = "as built", f"peer: {peer.name}"
    for name in rows:
        rows[name]["p50_ms"] = statistics.median(times[name])
    b, pr = rows[base], rows[peer_key]
    print(f"\n{ours.name} at {imgsz[0]}x{imgsz[1]} (h x w): {len(kept)} convs kept in float; "
          f"agreement on {len(agree_paths)} frames "
          f"(FP32 with itself: {gate.score(lambda x: fp32_compiled(x)[0]):.3f}); p50 interleaved, {args.runs} rounds, "
          f"{params.validate_.threads} threads\n")  # fmt: skip
    print(f"{'variant':45} {'convs':>5} {'agreement':>9} {'p50 ms':>7} {'vs built':>8} {'vs peer':>7} "
          f"{'group buys':>10} {'group costs':>11}")  # fmt: skip
    for name, r in rows.items():
        buys = b["agreement"] - r["agreement"] if name.startswith(("minus", "no conv")) else float("nan")
        costs = b["p50_ms"] - r["p50_ms"] if name.startswith(("minus", "no conv")) else float("nan")
        ratios = f"{r['p50_ms'] / b['p50_ms']:8.3f} {r['p50_ms'] / pr['p50_ms']:7.3f}"
        print(f"{name[:45]:45} {r['convs_in_float']:>5} {r['agreement']:9.3f} {r['p50_ms']:7.2f} {ratios} "
              f"{buys:+10.3f} {costs:+10.2f}ms")  # fmt: skip
    print("\ngroup buys: the agreement lost when that group is quantized too; group costs: the p50 saved then.")
    print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
