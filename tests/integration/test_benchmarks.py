"""Each benchmark runs as the README documents it (`python benchmarks/<name>.py` with the venv's python, no PYTHONPATH
pointing at the checkout), in a tiny mode: the printed table has its ratio columns. Speed values are not checked."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
RATIO = r"\d+\.\d+x"  # a same-run ratio as the tables print it, e.g. 1.87x


def run_benchmark(name: str, *args: str, cwd: Path = ROOT, timeout: float = 120) -> str:
    """`python benchmarks/<name>.py ...` from `cwd`, as a user runs it: the checkout's own folder is taken out of
    PYTHONPATH (pytest puts it on sys.path; a script run does not), so the imports resolve through the install."""
    keep = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(keep), "COLUMNS": "200"}
    cmd = [sys.executable, str(BENCHMARKS / f"{name}.py"), *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd[1:])} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture
def bench_project(tmp_path: Path, built: tuple, plate_model: Path) -> Path:
    """A copy of the session's built project (extracted frames, holdout, candidates) with its base model in place,
    as `make demo` leaves a project: the benchmarks run from it and write nothing into the shared one."""
    params, _ = built
    root = tmp_path / "project"
    shutil.copytree(params.paths.calibration_yaml.parent, root, ignore=shutil.ignore_patterns(".cache"), symlinks=True)
    (root / "models").mkdir(exist_ok=True)
    shutil.copyfile(plate_model, root / "models" / "best.pt")
    return root


def table(out: str, header_starts: str, row: str = r".") -> tuple[str, list[str]]:
    """The header line starting with `header_starts` and the lines right below it that match `row` (up to the first
    that does not, a blank or a comment line)."""
    lines = out.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(header_starts)), None)
    assert at is not None, f"no table with a header starting {header_starts!r}:\n{out}"
    rows = []
    for line in lines[at + 1 :]:
        if not line.strip() or line.startswith("#") or not re.search(row, line):
            break
        rows.append(line)
    return lines[at], rows


def test_the_package_installs_the_testkit_the_benchmarks_import() -> None:
    """`make setup`'s editable install provides what the benchmarks import from this checkout (not only pytest's
    sys.path), and the library never imports the test helpers."""
    from setuptools import find_packages

    imported = set()
    for script in BENCHMARKS.glob("*.py"):
        imported |= set(re.findall(r"^\s*(?:from|import) (\w+)", script.read_text(), re.MULTILINE))
    local = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    installed = {p.split(".")[0] for p in find_packages(str(ROOT), include=find["include"])}
    assert "testkit" in imported & local
    assert imported & local <= installed, f"benchmarks import {sorted(imported & local - installed)}, not installed"
    for code in ("tasks", "flows", "cli"):
        users = [p for p in (ROOT / code).rglob("*.py") if re.search(r"^\s*(from|import) testkit", p.read_text(), re.M)]
        assert not users, f"the library imports the test helpers: {users}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["extract", "int8", "float_scope", "shape_margin"])
def test_each_benchmark_prints_its_help_from_the_repository_root(name: str) -> None:
    out = run_benchmark(name, "--help")
    assert out.startswith(f"usage: {name}.py"), out


@pytest.mark.timeout(180)
def test_extract_benchmark_in_a_tiny_mode_prints_a_ratio_per_kind_of_clip(tmp_path: Path) -> None:
    """2 s clips at 320x180 and 10 fps, one run each: every kind of clip whose encoder PyAV has gets a row with the
    same-run ratio and its target, both methods keep frames at the same times, and the 1 vs 2 workers line."""
    spec = importlib.util.spec_from_file_location("benchmark_extract", BENCHMARKS / "extract.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # the script's own list of clip kinds (main() only runs as a script)
    fps = 10
    out = run_benchmark(
        "extract", "--seconds", "2", "--size", "320x180", "--fps", str(fps), "--repeat", "1", "--out", str(tmp_path)
    )
    skipped = re.findall(r"PyAV's FFmpeg has no (\S+) encoder", out)
    expected = [label for label, codec, *_ in bench.KINDS if codec not in skipped]
    labels = "|".join(re.escape(label) for label, *_ in bench.KINDS)
    header, rows = table(out, "clip ", rf"^({labels})")
    assert re.search(r"\bratio\s+target\s+met\b", header), header
    assert [r[:36].strip() for r in rows] == expected, out
    for row in rows:
        m = re.search(rf"({RATIO})\s+(\d+\.\d)x\s+(yes|NO)\s+(\d+\.\d+) s$", row)
        assert m, f"no ratio, target, met and time offset in {row!r}"
        assert float(m.group(4)) <= 1 / fps, f"the two methods kept frames at different times: {row!r}"
    assert re.search(rf"whole extraction of \d+ videos: 1 worker .* 2 workers .* -> {RATIO}", out), out


@pytest.mark.timeout(240)
def test_int8_benchmark_in_a_tiny_mode_prints_every_candidates_ratios(built: tuple, bench_project: Path) -> None:
    """The session's built project (320 px, 6 holdout frames), 3 timed runs: one row per candidate, with its
    latency ratio to both FP32 references and to each Ultralytics INT8 peer (each reference's to itself is 1.00)."""
    params, candidates = built
    out = run_benchmark("int8", "--params", "params.yaml", "--runs", "3", "--warmup", "1", cwd=bench_project)
    ref, speed = params.build.reference, params.build.speed_reference_name
    peers = [c.name for c in candidates if c.method == "ultralytics" and c.precision == "int8"]
    assert peers, [c.name for c in candidates]
    header, rows = table(out, "candidate")
    columns = header.split()
    ratio_columns = [f"x{ref}", f"x{speed}", *(f"x{p}" for p in peers)]
    assert [c for c in columns if c.startswith("x")] == ratio_columns, header
    declared = [c.name for c in candidates if "@" not in c.name]  # the derived FP32 models measure, not compete
    assert [r.split()[0] for r in rows] == declared, out
    assert "dq pt" in header, header  # the quantization's own cost, against FP32 at the candidate's geometry
    derived = [c for c in candidates if "@" in c.name]
    for c in derived:  # what each geometry itself costs FP32, once
        assert re.search(
            rf"^# {re.escape(c.name)}: FP32 at \d+x\d+ \d\.\d{{3}} \([+-]\d+\.\d pt vs square\)$", out, re.M
        ), out
    at = header.index(ratio_columns[0])
    for row in rows:
        cells = row[at:].split()
        ratios = dict(zip(ratio_columns, cells, strict=False))
        assert all(re.fullmatch(r"\d+\.\d\d", v) for v in ratios.values()), f"ratios {ratios} in {row!r}"
        own = {ref: f"x{ref}", speed: f"x{speed}", **{p: f"x{p}" for p in peers}}.get(row.split()[0])
        if own is not None:
            assert ratios[own] == "1.00", f"{row.split()[0]} against itself: {ratios[own]}"
    assert re.search(r"^# measured in \d+ s$", out, re.M), out


@pytest.mark.timeout(240)
def test_float_scope_benchmark_in_a_tiny_mode_prints_each_variants_ratios(built: tuple, bench_project: Path) -> None:
    """Our NNCF build of the session's project re-quantized as built, with one float-kept layer group quantized too
    and with no conv in float, 3 timed rounds: a row per variant with its agreement and its p50 ratios to ours as
    built and to Ultralytics' OpenVINO INT8 export."""
    _, candidates = built
    ours = next(c for c in candidates if c.method == "nncf")
    peer = next(
        c for c in candidates if c.method == "ultralytics" and c.backend == "openvino" and c.precision == "int8"
    )
    args = ["--params", "params.yaml", "--candidate", ours.name, "--peer", peer.name, "--runs", "3", "--warmup", "1"]
    args += ["--groups", "1"]  # one layer group re-quantized (each is a full NNCF run with bias correction)
    out = run_benchmark("float_scope", *args, cwd=bench_project, timeout=200)
    header, rows = table(out, "variant")
    assert re.search(r"\bvs built\s+vs peer\s+group buys\s+group costs\b", header), header
    variants = {row[:45].strip(): row[45:].split() for row in rows}
    assert {"as built", "as built (saved IR)", "no conv in float", f"peer: {peer.name}"} <= variants.keys(), out
    for name, (convs, agreement, _p50, vs_built, vs_peer, *_rest) in variants.items():
        assert int(convs) >= 0 and 0.0 <= float(agreement) <= 1.0, f"{name}: {variants[name]}"
        assert re.fullmatch(r"\d+\.\d{3}", vs_built) and re.fullmatch(r"\d+\.\d{3}", vs_peer), variants[name]
    assert variants["as built"][3] == "1.000" and variants[f"peer: {peer.name}"][4] == "1.000", out
    groups = [name for name in variants if name.startswith("minus ")]
    assert len(groups) == 1, f"--groups 1 re-quantized {groups}"
    for name in [*groups, "no conv in float"]:  # what quantizing that group too buys and costs, both signed
        assert re.fullmatch(r"[+-]\d+\.\d{3}", variants[name][5]), variants[name]
        assert re.fullmatch(r"[+-]\d+\.\d{2}ms", variants[name][6]), variants[name]


@pytest.mark.timeout(120)
def test_shape_margin_benchmark_in_a_tiny_mode_prints_each_bands_cost_and_the_choice(
    tmp_path: Path, plate_model: Path
) -> None:
    """The project's params (1280x720 sample frames) at imgsz 160, 3 labelled frames per sample set: a row per margin
    at its camera shape, each set's cost against the square row, and the chosen margin the smallest whose costs are
    all within 0.3 pt."""
    from tasks.support.shape import camera_shape, shape_text

    shutil.copyfile(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "models").mkdir()
    shutil.copyfile(plate_model, tmp_path / "models" / "best.pt")
    out = run_benchmark("shape_margin", "--params", "params.yaml", "--tiny", "--seeds", "0,1", cwd=tmp_path)
    header, rows = table(out, "margin", r"^\s*(square|\d+)\s")
    assert re.search(r"^margin\s+input\s+px vs 96x160\s+mAP seed 0\s+cost pt\s+mAP seed 1\s+cost pt$", header), header
    cells = {r.split()[0]: r.split()[1:] for r in rows}
    assert list(cells) == ["square", "0", "8", "16", "24", "32"], out
    assert cells["square"][:2] == ["160x160", "1.67x"] and cells["square"][3::2] == ["+0.00", "+0.00"], out
    for margin in (0, 8, 16, 24, 32):
        shape, px, map0, cost0, map1, cost1 = cells[str(margin)]
        assert shape == shape_text(camera_shape((720, 1280), 160, margin)), f"margin {margin}: {shape}"
        h, w = map(int, shape.split("x"))
        assert px == f"{h * w / (96 * 160):.2f}x", cells[str(margin)]
        for got, square_map, cost in ((map0, cells["square"][2], cost0), (map1, cells["square"][4], cost1)):
            assert abs((float(square_map) - float(got)) * 100 - float(cost)) <= 0.11, f"margin {margin}: {cost}"
    costs = {m: [float(cells[str(m)][3]), float(cells[str(m)][5])] for m in (0, 8, 16, 24, 32)}
    within = [m for m, c in costs.items() if max(c) <= 0.3]
    assert within, costs  # margin 24 at imgsz 160 is the square input itself: cost 0
    pick = min(within)
    assert re.search(
        rf"^chosen margin: {pick} \(input {shape_text(camera_shape((720, 1280), 160, pick))}\b", out, re.M
    ), out
