"""INT8 candidates side by side, in one run, on the same holdout frames: mAP50-95, agreement with FP32, median and
p95 latency on each candidate's own runtime and input shape (runs interleaved across candidates so load changes hit
all alike), build time and size, with latency ratios to both FP32 references (the accuracy reference,
`build.reference`, and the speed reference, `build.speed_reference`) and to each Ultralytics INT8 peer.

Usage (from a project folder where `alpr-ops extract` and `alpr-ops build` have run):

    python benchmarks/int8.py --params params.yaml [--runs 50] [--names fp32,ov-int8,...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.int8")


def quiet_onnxruntime(model) -> bool:
    """Reopen an ONNX Runtime session with its intra-op threads not spinning after a run.

    ORT's threads spin-wait for more work after each inference; interleaved in one process, they burn both cores
    while the next candidate runs, so whichever model follows an ORT one looked ~1.5x slower (measured here:
    OpenVINO INT8 47 ms alone, 73 ms right after the ORT FP32 run). A gate runs one model, so neither should pay.
    """
    import onnxruntime as ort

    backend = model.predictor.model
    backend = getattr(backend, "backend", backend)
    session = getattr(backend, "session", None)
    if not isinstance(session, ort.InferenceSession):
        return False
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    backend.session = ort.InferenceSession(session._model_path, opts, providers=session.get_providers())
    return True


def interleaved_latency(candidates: list, frame: np.ndarray, warmup: int, runs: int) -> dict:
    """Inference latency (ms) per candidate at its own input shape, measured round-robin: run r of every candidate
    before run r+1."""
    from ultralytics import YOLO

    models = {c.name: YOLO(str(c.path), task="detect") for c in candidates}
    kwargs = {
        c.name: {"imgsz": list(c.input_shape), "conf": 0.25, "device": "cpu", "verbose": False} for c in candidates
    }
    for name, model in models.items():
        model.predict(frame, **kwargs[name])  # creates the predictor and its runtime session
        if quiet_onnxruntime(model):
            log.info("%s: ONNX Runtime threads set not to spin between runs", name)
        for _ in range(warmup):
            model.predict(frame, **kwargs[name])
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(runs):
        for name, model in models.items():
            times[name].append(model.predict(frame, **kwargs[name])[0].speed["inference"])
    return {n: (float(np.median(t)), float(np.percentile(t, 95))) for n, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--names", default="", help="comma-separated candidate names (default: build.candidates)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from tasks.support.config import load_params
    from tasks.support.offline import configure_offline

    params = load_params(args.params)
    configure_offline(params.paths.ultralytics_config)
    import cv2

    from tasks.pipeline.build import with_geometry_references
    from tasks.pipeline.scoring import accuracy, agreement
    from tasks.pipeline.validate import agreement_images, class_names, detect, holdout_images, holdout_truth
    from tasks.support.candidate import load_candidates
    from tasks.support.shape import geometry_of, geometry_reference_name, shape_text

    names = args.names.split(",") if args.names else [c.name for c in params.build.candidates]
    speed = params.build.speed_reference_name
    missing = [n for n in (params.build.reference, speed) if n not in names]
    if missing:  # every ratio is to them: a run without them could not say what its ratios mean
        raise SystemExit(f"--names {names} leaves out the FP32 reference(s) {missing}: add them")
    candidates = load_candidates(params.paths.candidates, names)
    ref = params.build.reference
    # the FP32 models the build derived at the INT8 candidates' geometries: what quantization alone is measured against
    measured = with_geometry_references(params.paths.candidates, candidates, ref)
    by_name = {c.name: c for c in measured}
    square = geometry_of(by_name[ref])

    def own_reference(c) -> str:
        """The FP32 model at `c`'s geometry (the square reference for a square candidate)."""
        g = geometry_of(c)
        return ref if g == square else geometry_reference_name(ref, g)

    vcfg = params.validate_
    images = holdout_images(params.paths.holdout, list(params.model.names))
    # agreement on the frames validation uses: the held-out videos' frames and the labelled holdout's images
    agree_images, agree_source = agreement_images(params.paths.holdout_frames, images)
    rows: dict[str, dict] = {}
    started = time.perf_counter()
    names = class_names(by_name[ref])
    truth = holdout_truth(params.paths.holdout, images, list(names.values()))
    labelled = [agree_images.index(i) for i in images]
    found = {c.name: detect(c, agree_images, vcfg) for c in measured}  # once per frame, validation's way
    maps = {
        c.name: accuracy(truth, [found[c.name][i] for i in labelled], names, images)[0]["map50_95"] for c in measured
    }
    for c in candidates:
        own = own_reference(c)
        if own not in found:
            raise SystemExit(f"{c.name}: no FP32 model at its geometry ({own}) in {params.paths.candidates}: rebuild")
        agr, _ = agreement(found[own], found[c.name], agree_images, names, vcfg.agreement_conf)
        rows[c.name] = {
            "map": maps[c.name],
            "quant": maps[own] - maps[c.name],
            "agree": agr["agreement_map50_95"],
            "crop": list(c.crop),
            "size": c.size_mb,
            "build": c.build_seconds,
        }
    frame = cv2.imread(str(images[0]))
    load = os.getloadavg()[0]  # the machine's load as timing starts (its ms are only comparable at a like load)
    lat = interleaved_latency(candidates, frame, args.warmup, args.runs)
    for name, (p50, p95) in lat.items():
        rows[name].update(p50=p50, p95=p95)
    peers = [c.name for c in candidates if c.method == "ultralytics" and c.precision == "int8"]
    header = f"{'candidate':<16}{'method':<12}{'runtime':<12}{'input hxw':>10}{'mAP50-95':>9}{'dmAP pt':>8}"
    header += f"{'dq pt':>7}"
    header += f"{'agree':>7}{'p50 ms':>8}{'p95 ms':>8}{'x' + ref:>10}{'x' + speed:>10}"
    header += "".join(f"{'x' + p:>12}" for p in peers) + f"{'build s':>9}{'MB':>7}  kept-in-float"
    out = [
        f"# INT8 benchmark: {len(images)} labelled holdout frames, agreement on {len(agree_images)} frames "
        f"({agree_source}), {args.runs} interleaved runs, {os.cpu_count()} CPU cores, "
        f"load average {load:.1f} at the start of timing (absolute ms are noisy on a shared machine; "
        "ratios are from one run)",
        f"# accuracy reference: {ref} (dmAP: against it, what the user sees); dq and agree: against FP32 at the "
        f"candidate's own geometry (what quantization cost); speed reference: {speed} (x{speed}: p50 over its p50)",
        header,
    ]
    r0 = rows[ref]
    for c in candidates:
        r = rows[c.name]
        kept = c.quantization.get("kept_in_float", [])
        line = f"{c.name:<16}{c.method:<12}{c.backend:<12}{shape_text(c.input_shape):>10}{r['map']:>9.3f}"
        line += f"{(r['map'] - r0['map']) * 100:>+8.1f}{-r['quant'] * 100:>+7.1f}"
        line += f"{r['agree']:>7.3f}{r['p50']:>8.1f}{r['p95']:>8.1f}"
        line += f"{r['p50'] / r0['p50']:>10.2f}{r['p50'] / rows[speed]['p50']:>10.2f}"
        line += "".join(f"{r['p50'] / rows[p]['p50']:>12.2f}" for p in peers)
        line += f"{r['build']:>9.0f}{r['size']:>7.1f}  {len(kept)}"
        out.append(line)
    crops = {str(r["crop"]) for r in rows.values() if r["crop"]}
    for crop in sorted(crops):  # what the region-of-interest engines look at, and what that geometry itself costs
        g = next(geometry_of(c) for c in candidates if str(list(c.crop)) == crop)
        own = geometry_reference_name(ref, g)
        out.append(f"# region {g.text}: FP32 there {maps[own]:.3f} ({(maps[own] - maps[ref]) * 100:+.1f} pt vs square)")
    for c in measured:
        if c.name not in rows and c.name != ref and not c.crop:
            out.append(
                f"# {c.name}: FP32 at {shape_text(c.input_shape)} {maps[c.name]:.3f} "
                f"({(maps[c.name] - maps[ref]) * 100:+.1f} pt vs square)"
            )
    out.append(f"# measured in {time.perf_counter() - started:.0f} s")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
