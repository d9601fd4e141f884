"""What the camera shape's letterbox band (`build.shape_margin`) costs FP32 accuracy, per band, on sample sets of
several seeds, and the default it picks (issue 26, decision 2).

The geometry's cost is the square FP32 model's mAP50-95 minus that of the FP32 model at the camera shape, on a
labelled holdout, before any quantization. For each sample set (the demo's, `sample.seed`, and sets of other seeds,
each generated as `alpr-ops sample-videos --seed` writes its labelled holdout, into a temporary folder), the base
model (`paths.model`) is exported to FP32 OpenVINO by the build's own export (`export_candidate`) at the square
`build.imgsz` and at `camera_shape` for each margin (one export per distinct shape), run over the holdout by the
gate's detector path (`tasks.edge.detect.Detector`, full frames: what `build.roi: full` runs) and scored by the one
metric (`tasks.pipeline.scoring.accuracy`). The chosen margin is the smallest whose cost is at most `--max-cost`
points on every set.

Usage (from a project folder holding `params.yaml` and the base model, e.g. after `alpr-ops fetch-model`):

    python benchmarks/shape_margin.py --params params.yaml [--seeds 0,1] [--frames 60] [--margins 0,8,16,24,32]
                                      [--tiny]   # imgsz 160, 3 frames per set: a smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("benchmarks.shape_margin")

TINY_IMGSZ, TINY_FRAMES = 160, 3


def chosen_margin(costs: dict[int, list[float]], max_cost_pt: float) -> int | None:
    """The smallest margin whose cost (points, one per sample set) is at most `max_cost_pt` on every set."""
    return next((m for m in sorted(costs) if all(c <= max_cost_pt for c in costs[m])), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seeds", default="", help="comma-separated sample seeds (default: sample.seed and the next one)")
    ap.add_argument("--frames", type=int, default=None, help="labelled frames per set (default: sample.holdout_frames)")
    ap.add_argument("--margins", default="0,8,16,24,32", help="comma-separated build.shape_margin values (pixels)")
    ap.add_argument("--imgsz", type=int, default=None, help="the input's long side (default: build.imgsz)")
    ap.add_argument("--max-cost", type=float, default=0.3, help="the geometry's cost allowed, mAP50-95 points")
    ap.add_argument("--tiny", action="store_true", help=f"imgsz {TINY_IMGSZ}, {TINY_FRAMES} frames per set")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # this script's progress, one line per shape; the libraries' at WARNING

    from tasks.support.config import load_params
    from tasks.support.offline import configure_offline

    params = load_params(args.params)
    configure_offline(params.paths.ultralytics_config)
    import cv2

    from tasks.demo.synth import SynthConfig, write_holdout
    from tasks.edge.detect import Detector
    from tasks.pipeline.build import export_candidate
    from tasks.pipeline.scoring import accuracy
    from tasks.pipeline.validate import holdout_images, holdout_truth
    from tasks.support.config import CandidateConfig
    from tasks.support.shape import camera_shape, shape_text, square

    s, vcfg = params.sample, params.validate_
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [s.seed, s.seed + 1]
    margins = sorted({int(x) for x in args.margins.split(",")})
    imgsz = args.imgsz or (TINY_IMGSZ if args.tiny else params.build.imgsz)
    frames = args.frames or (TINY_FRAMES if args.tiny else s.holdout_frames)
    synth = SynthConfig(width=s.width, height=s.height, fps=s.fps)
    frame_hw = (s.height, s.width)
    shapes = {m: camera_shape(frame_hw, imgsz, m) for m in margins}
    base_px = shapes[margins[0]][0] * shapes[margins[0]][1]
    names = dict(enumerate(params.model.names))
    conf = min(vcfg.conf, vcfg.agreement_conf)  # validation's one pass: mAP over the full confidence range
    load = os.getloadavg()
    started = time.perf_counter()

    maps: dict[tuple[int, int], dict[int, float]] = {}  # shape -> seed -> mAP50-95
    with tempfile.TemporaryDirectory(prefix="alpr-shape-margin-") as tmp:
        sets = {}
        for seed in seeds:
            folder = write_holdout(Path(tmp) / f"holdout-{seed}", frames, seed, synth)
            images = holdout_images(folder, list(names.values()))
            sets[seed] = (images, holdout_truth(folder, images, list(names.values())))
        fp32 = CandidateConfig(name="fp32-ov", precision="fp32", backend="openvino")
        for shape in [square(imgsz), *dict.fromkeys(shapes.values())]:
            if shape in maps:
                continue  # a margin wide enough gives the square itself
            out = Path(tmp) / shape_text(shape)
            out.mkdir()
            artifact = export_candidate(params.paths.model, fp32, "openvino", params.paths.calibration_yaml, shape, out)
            detector = Detector.open(artifact, vcfg.threads)
            try:
                if tuple(detector.input_hw) != shape:
                    raise SystemExit(f"{artifact} takes {detector.input_hw}, not {shape}: the export ignored imgsz")
                maps[shape] = {}
                for seed, (images, truth) in sets.items():
                    found = [detector(cv2.imread(str(i)), conf, vcfg.iou) for i in images]
                    maps[shape][seed] = accuracy(truth, found, names, images)[0]["map50_95"]
            finally:
                detector.close()
            log.info("%s: mAP50-95 %s", shape_text(shape), {k: round(v, 4) for k, v in maps[shape].items()})

    ref = maps[square(imgsz)]
    costs = {m: [(ref[seed] - maps[shapes[m]][seed]) * 100 for seed in seeds] for m in margins}
    pick = chosen_margin(costs, args.max_cost)
    base = shape_text(shapes[margins[0]])
    out = [
        f"# the letterbox band's cost: FP32 OpenVINO, {s.width}x{s.height} frames at imgsz {imgsz}, "
        f"{frames} labelled frames per sample set (seeds {', '.join(map(str, seeds))}), full frames; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start, {os.cpu_count()} CPU cores",
        "# cost: the square FP32 model's mAP50-95 minus the model's at that shape, in points (positive: the shape "
        "loses accuracy)",
    ]
    header = f"{'margin':>6}  {'input':>9}  {'px vs ' + base:>14}"
    header += "".join(f"  {f'mAP seed {seed}':>11}  {'cost pt':>7}" for seed in seeds)
    out.append(header)
    sq = square(imgsz)
    line = f"{'square':>6}  {shape_text(sq):>9}  {sq[0] * sq[1] / base_px:>13.2f}x"
    out.append(line + "".join(f"  {ref[seed]:>11.3f}  {0.0:>+7.2f}" for seed in seeds))
    for m in margins:
        shape = shapes[m]
        line = f"{m:>6}  {shape_text(shape):>9}  {shape[0] * shape[1] / base_px:>13.2f}x"
        shown = [round(c, 2) + 0.0 for c in costs[m]]  # + 0.0: no "-0.00" for a shape as good as the square
        line += "".join(f"  {maps[shape][seed]:>11.3f}  {c:>+7.2f}" for seed, c in zip(seeds, shown, strict=True))
        out.append(line)
    out.append("")
    if pick is None:
        out.append(f"chosen margin: none (no margin costs at most {args.max_cost} pt on every set)")
    else:
        out.append(f"chosen margin: {pick} (input {shape_text(shapes[pick])}: the smallest band costing at most "
                   f"{args.max_cost} pt on every set)")  # fmt: skip
    out.append(f"# measured in {time.perf_counter() - started:.0f} s")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
