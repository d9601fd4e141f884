"""Deterministic synthetic parking-gate footage with exact licence-plate ground truth.

Why: the demo and the tests need gate videos and a labelled holdout set without shipping real (personal) data.
A pinhole camera on a pole looks down a lane at a barrier; each car approaches, stops, waits for the arm to lift
and turns out of view. Everything is drawn from a seeded numpy Generator, so a seed reproduces the same pixels.
Labels follow the reference detector's box convention (plate plus its margin), measured against its predictions.
Frames are drawn in pixels; their label boxes leave as the holdout's own `Box` (normalised), written by `yolo_text`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.pipeline.labels import HOLDOUT_JSON, Box, yolo_text
from tasks.support.fsutil import OutputFolder, atomic_dir

log = logging.getLogger(__name__)

_Corners = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels: a label box while a frame is drawn
# Label box = tight plate box scaled (w, h) and shifted (dy, in tight heights), per plate kind, measured as the median
# ratio of the reference detector's boxes to tight plate boxes on 60 holdout frames (it boxes the plate with margin).
LABEL_MARGIN = {"single": (1.0, 1.62, -0.04), "double": (1.10, 1.32, -0.02)}
MIN_LABEL_PX = 8.0  # plates narrower than this are unlabelled (invisible at any detector resolution)
BARRIER_Z, STOP_Z, ARM_Y, ARM_MAX_DEG, LIFT_S = 3.5, 4.3, 1.0, 85.0, 1.0  # metres / seconds
PLATE_M = {"single": (0.52, 0.11), "double": (0.32, 0.16)}  # 4.7:1 EU single line, 2:1 two-line
_LETTERS, _DIGITS = "ABCDEFGHJKLMNPRSTUVWXYZ", "0123456789"
_PALETTE = [(235, 235, 235), (25, 25, 28), (120, 120, 125), (180, 182, 185), (40, 40, 170), (140, 70, 30), (40, 80, 40)]


@dataclass(frozen=True)
class SynthConfig:
    """Frame geometry of generated footage; validated so bad sizes fail before any file is written."""

    width: int = 1280
    height: int = 720
    fps: int = 15

    def __post_init__(self) -> None:
        if not (160 <= self.width <= 4096 and 90 <= self.height <= 4096):
            raise ValueError(f"frame size {self.width}x{self.height} outside 160x90..4096x4096")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"frame size {self.width}x{self.height} must be even (video codecs need it)")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps {self.fps} outside 1..120")


@dataclass(frozen=True)
class _Car:
    levels: list[np.ndarray]  # BGRA sprite halved repeatedly, largest first, so per-frame resizes stay cheap
    ppm: float  # pixels per metre of the largest level
    quad: np.ndarray  # plate corners (4x2, edge coordinates) in the largest sprite
    ground_row: float  # sprite row of the ground line at the largest level
    left_m: float  # world X of the sprite's left edge relative to the car's centre line
    kind: str


@dataclass(frozen=True)
class _Track:
    car: _Car
    x: float  # lane centre of the car, metres right of the camera
    t0: float
    t_stop: float
    t_lift: float
    t_go: float
    t_down: float
    z_far: float
    accel: float

    def pose(self, t: float) -> tuple[float, float] | None:
        """(x, z) of the car's front at time t; None when not in the scene."""
        if t < self.t0:
            return None
        if t < self.t_stop:
            u = (t - self.t0) / (self.t_stop - self.t0)
            return self.x, STOP_Z + (self.z_far - STOP_Z) * (1.0 - u) ** 2  # decelerates to zero at the stop
        z = STOP_Z - 0.5 * self.accel * max(0.0, t - self.t_go) ** 2
        return (self.x + 0.7 * (STOP_Z - z) ** 2, z) if z > 1.0 else None  # turns right after the gate

    def arm(self, t: float) -> float:
        """Arm lift level 0 (down) .. 1 (up) requested by this car."""
        return float(np.clip(min((t - self.t_lift) / LIFT_S, (self.t_down + LIFT_S - t) / LIFT_S), 0.0, 1.0))


@dataclass(frozen=True)
class Scene:
    """Everything fixed for one camera set-up: geometry, background, cars, lighting and noise parameters."""

    cfg: SynthConfig
    f: float
    cx: float
    cy: float
    cam_h: float
    background: np.ndarray
    tracks: list[_Track]
    light: tuple[float, float, float, float, tuple[float, float, float]]  # base, amp, period, phase, tint
    noise: list[tuple[np.ndarray, np.ndarray]]  # (positive, negative) uint8 noise frames, a few rows taller
    exposure: float  # fraction of the frame time the shutter is open (motion blur)
    arm_colour: tuple[int, int, int]

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        return self.cx + self.f * x / z, self.cy + self.f * (self.cam_h - y) / z


def _ints(values: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(values, 0, 255))


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    import matplotlib  # only for its bundled bold TTF

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans-Bold.ttf"), 160)


def _plate_texture(rng: np.random.Generator, kind: str, ppm: float = 800.0) -> np.ndarray:
    """BGR plate image: white or yellow, dark bold condensed characters, border, optional EU band."""
    wm, hm = PLATE_M[kind]
    w, h = int(wm * ppm), int(hm * ppm)
    yellow = rng.random() < 0.35
    bg = _ints(np.array((250, 200, 35) if yellow else (244, 245, 242)) + rng.integers(-12, 6, 3))
    ink = _ints(rng.integers(8, 45, 3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    bd = max(2, int(0.006 * ppm))
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=int(0.012 * ppm), outline=ink, width=bd)
    x0 = 2 * bd + int(0.01 * ppm)
    if kind == "single" and rng.random() < 0.6:
        band = int(0.045 * ppm)
        draw.rectangle([bd, bd, bd + band, h - bd - 1], fill=(0, 51, 153))
        x0 = bd + band + int(0.012 * ppm)
    letters = lambda k: "".join(rng.choice(list(_LETTERS), k))  # noqa: E731
    digits = lambda k: "".join(rng.choice(list(_DIGITS), k))  # noqa: E731
    if kind == "single":
        pick = int(rng.integers(3))  # common EU layouts
        lines = [(f"{letters(2)} {digits(3)} {letters(2)}", f"{letters(2)}-{digits(3)}-{letters(1)}")[pick % 2]]
        lines = [f"{digits(1)}-{letters(3)}-{digits(2)}"] if pick == 2 else lines
        boxes = [(x0, int(0.18 * h), w - 2 * bd - int(0.01 * ppm), int(0.82 * h))]
    else:
        lines = [f"{letters(2)} {digits(2)}", f"{digits(3)} {letters(1)}"]
        boxes = [(x0, int(0.10 * h), w - x0, int(0.46 * h)), (x0, int(0.54 * h), w - x0, int(0.90 * h))]
    for text, (bx1, by1, bx2, by2) in zip(lines, boxes, strict=True):
        left, top, right, bottom = _font().getbbox(text)
        glyphs = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(glyphs).text((-left, -top), text, font=_font(), fill=255)
        img.paste(ink, (bx1, by1, bx2, by2), glyphs.resize((bx2 - bx1, by2 - by1), Image.LANCZOS))
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)


def _make_car(rng: np.random.Generator, ppm: float) -> _Car:
    """Front view of a car with a perspective-warped plate, pre-scaled to a few mip levels."""
    wm, hm, pad, shadow = rng.uniform(1.65, 1.9), rng.uniform(1.38, 1.7), 0.12, 0.1
    big_w, big_h, g = int((wm + 2 * pad) * ppm), int((hm + shadow) * ppm), hm * ppm
    spr = np.zeros((big_h, big_w, 4), np.uint8)

    def pts(*xy: float) -> np.ndarray:
        return np.array([[(pad + x) * ppm, g - y * ppm] for x, y in zip(xy[::2], xy[1::2], strict=True)], np.int32)

    def fill(poly: np.ndarray, colour: tuple[int, ...]) -> None:
        cv2.fillPoly(spr, [poly], (*colour[:3], 255) if len(colour) == 3 else colour, cv2.LINE_AA)

    body = _ints(np.array(_PALETTE[rng.integers(len(_PALETTE))]) * rng.uniform(0.85, 1.1))
    lighter = tuple(min(255, int(c * 1.2 + 20)) for c in body)
    cv2.ellipse(
        spr, (int((pad + wm / 2) * ppm), int(g)), (int(wm * 0.55 * ppm), int(0.07 * ppm)), 0, 0, 360, (8, 8, 8, 130), -1
    )
    for x in (0.05, wm - 0.27):
        fill(pts(x, 0.36, x + 0.22, 0.36, x + 0.22, 0.0, x, 0.0), (18, 18, 20))
    fill(pts(0.02, 0.14, 0.0, 0.5, 0.03, 0.9, wm - 0.03, 0.9, wm, 0.5, wm - 0.02, 0.14), body)
    fill(pts(0.05, 0.9, 0.1, 1.0, wm - 0.1, 1.0, wm - 0.05, 0.9), lighter)
    fill(pts(0.12, 1.0, 0.3, hm, wm - 0.3, hm, wm - 0.12, 1.0), body)
    glass = pts(0.19, 1.02, 0.36, hm - 0.07, wm - 0.36, hm - 0.07, wm - 0.19, 1.02)
    r1, r2 = glass[:, 1].min(), glass[:, 1].max() + 1
    mask = np.zeros((r2 - r1, big_w), np.uint8)
    cv2.fillPoly(mask, [glass - [0, r1]], 255)
    grad = (
        np.linspace(95, 35, r2 - r1)[:, None, None] * np.array([1.0, 0.95, 0.9])
        + np.linspace(0, 25, big_w)[None, :, None]
    )
    np.copyto(spr[r1:r2, :, :3], grad.astype(np.uint8), where=mask[..., None] > 0)
    for x in (0.0, wm - 0.14):
        fill(pts(x, 0.98, x + 0.14, 0.98, x + 0.14, 1.1, x, 1.08), body)
    light = _ints(rng.integers(200, 240, 3))
    fill(pts(0.08, 0.64, 0.44, 0.62, 0.46, 0.76, 0.1, 0.8), light)
    fill(pts(wm - 0.08, 0.64, wm - 0.44, 0.62, wm - 0.46, 0.76, wm - 0.1, 0.8), light)
    gw = rng.uniform(0.22, 0.34)
    fill(pts(wm / 2 - gw, 0.58, wm / 2 + gw, 0.58, wm / 2 + gw, 0.77, wm / 2 - gw, 0.77), (30, 30, 32))
    fill(pts(0.4, 0.16, wm - 0.4, 0.16, wm - 0.4, 0.27, 0.4, 0.27), (35, 35, 38))
    shade = np.linspace(255, 200, big_h).astype(np.uint16)[:, None, None]
    spr[..., :3] = (spr[..., :3] * shade >> 8).astype(np.uint8)
    kind = "double" if rng.random() < 0.3 else "single"
    pw, ph = (v * ppm for v in PLATE_M[kind])
    centre = np.array(
        [(pad + wm / 2 + rng.uniform(-0.03, 0.03)) * ppm, g - rng.uniform(0.34, 0.56 - PLATE_M[kind][1] / 2) * ppm]
    )
    rect = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]])
    ang = math.radians(float(np.clip(rng.normal(0, 1.5), -4, 4)))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    rect[:2, 0] *= 1 - rng.uniform(-0.02, 0.05)  # keystone: the plate is tilted slightly back
    quad = rect @ rot.T + centre + rng.normal(0, 0.012 * ph, (4, 2))
    if rng.random() < 0.4:  # dark plate holder frame
        cv2.fillPoly(
            spr, [np.round((quad - centre) * [1.04, 1.14] + centre).astype(np.int32)], (20, 20, 20, 255), cv2.LINE_AA
        )
    tex = cv2.resize(_plate_texture(rng, kind), (max(4, int(pw)), max(4, int(ph))), interpolation=cv2.INTER_AREA)
    th, tw = tex.shape[:2]
    src = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32) - 0.5
    m = cv2.getPerspectiveTransform(src, (quad - 0.5).astype(np.float32))
    x1, y1 = np.floor(quad.min(0)).astype(int) - 2
    x2, y2 = np.ceil(quad.max(0)).astype(int) + 2
    m = np.array([[1, 0, -x1], [0, 1, -y1], [0, 0, 1]]) @ m  # warp only the plate's neighbourhood
    warped = cv2.warpPerspective(tex, m, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR)
    pm = cv2.warpPerspective(np.full((th, tw), 255, np.uint8), m, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR)
    a = pm[..., None].astype(np.float32) / 255.0
    roi = spr[y1:y2, x1:x2]
    roi[..., :3] = (roi[..., :3] * (1 - a) + warped * a).astype(np.uint8)
    roi[..., 3] = np.maximum(roi[..., 3], pm)
    levels = [spr]
    while levels[-1].shape[1] > 64:
        levels.append(cv2.resize(levels[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    return _Car(levels, ppm, quad, g, -(pad + wm / 2), kind)


def _background(rng: np.random.Generator, cfg: SynthConfig, f: float, cx: float, cy: float, cam_h: float) -> np.ndarray:
    """Static gate scene: sky, plain facade (no window grids: they fool the detector), trees, lane, barrier post."""
    w, h = cfg.width, cfg.height
    yy = np.arange(h, dtype=np.float32)[:, None, None]

    def blotch(cell: int) -> np.ndarray:
        small = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]

    top, bot = np.array([210, 160, 120], np.float32) * rng.uniform(0.8, 1.1), np.array([235, 220, 205], np.float32)
    img = top + (bot - top) * np.clip(yy / max(cy, 1.0), 0, 1)
    grey = rng.uniform(70, 115)
    ground = grey * (0.85 + 0.25 * blotch(24) + 0.06 * blotch(3)) * np.array([1.0, 1.0, 0.97], np.float32)
    img = np.where(yy >= cy, ground, img)

    def poly(world: list[tuple[float, float, float]], colour: np.ndarray | tuple[float, ...]) -> None:
        p = np.array([(cx + f * x / z, cy + f * (cam_h - y) / z) for x, y, z in world], np.float32)
        cv2.fillPoly(img, [np.round(p * 4).astype(np.int32)], tuple(float(c) for c in colour), cv2.LINE_AA, shift=2)

    def upright(x1: float, x2: float, y1: float, y2: float, z: float, colour: np.ndarray | tuple[float, ...]) -> None:
        poly([(x1, y1, z), (x2, y1, z), (x2, y2, z), (x1, y2, z)], colour)

    def flat(x1: float, x2: float, z1: float, z2: float, colour: np.ndarray | tuple[float, ...]) -> None:
        poly([(x1, 0, z1), (x2, 0, z1), (x2, 0, z2), (x1, 0, z2)], colour)

    zb = rng.uniform(30, 45)
    wall = np.array([rng.uniform(150, 215)] * 3, np.float32) * rng.uniform(0.85, 1.1, 3)
    x1, x2, height = rng.uniform(-25, -5), rng.uniform(8, 30), rng.uniform(6, 14)
    upright(x1, x2, 0, height, zb, wall)
    for yb in rng.uniform(2.5, height - 0.8, int(rng.integers(1, 3))):  # floor slabs, not windows
        upright(x1, x2, yb, yb + 0.5, zb, wall * 0.8)
    dx = rng.uniform(x1 + 1, x2 - 6)
    upright(dx, dx + 5, 0, 3.5, zb, wall * 0.55)  # one loading-bay door
    for _ in range(int(rng.integers(3, 7))):
        tx, tz, r = rng.uniform(-30, 30), rng.uniform(20, 28), rng.uniform(1.5, 3.0)
        centre = (int(cx + f * tx / tz), int(cy + f * (cam_h - 1.6 * r) / tz))
        cv2.circle(img, centre, max(2, int(f * r / tz)), (40.0, rng.uniform(80, 110), 50.0), -1, cv2.LINE_AA)
    img = np.where(yy >= cy, img, img * (0.96 + 0.08 * blotch(40)))
    paint = (215.0, 215.0, 210.0)
    flat(2.3, 9.0, 2.0, 60, (grey * 1.35, grey * 1.4, grey * 1.35))  # pavement
    flat(2.3, 2.45, 2.0, 60, (190.0, 190.0, 185.0))  # kerb
    for xe in (-0.3, 2.15):
        flat(xe, xe + 0.1, 1.5, 60, paint)
    flat(-0.3, 2.25, BARRIER_Z + 0.3, BARRIER_Z + 0.6, paint)  # stop line
    for z in np.arange(6.0, 40.0, 4.0):  # dashed line of the exit lane
        flat(-3.3, -3.2, z, z + 1.5, paint)
    upright(-4.2, -2.6, 0, 2.5, 6.5, np.array([rng.uniform(150, 220)] * 3))  # attendant booth
    upright(-4.0, -2.8, 1.1, 2.0, 6.5, (70.0, 60.0, 55.0))
    upright(-1.4, -1.05, 0, 1.3, 3.9, (60.0, 60.0, 60.0))  # ticket machine
    housing = (30.0, 200.0, 230.0) if rng.random() < 0.6 else (200.0, 200.0, 200.0)
    upright(-0.75, -0.45, 0, ARM_Y + 0.1, BARRIER_Z, housing)
    rr = ((np.arange(w)[None, :] - w / 2) ** 2 + (np.arange(h)[:, None] - h / 2) ** 2) / (w * w / 4 + h * h / 4)
    img *= (1.0 - 0.25 * rr.astype(np.float32))[..., None]  # lens vignette
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _make_scene(rng: np.random.Generator, cfg: SynthConfig, n_cars: int, seconds: float, n_noise: int) -> Scene:
    """Samples camera, background, lighting, noise and a schedule of cars that arrive one after another."""
    w, h = cfg.width, cfg.height
    f, cam_h = w * rng.uniform(0.72, 0.9), rng.uniform(1.35, 1.8)
    cx = w * rng.uniform(0.25, 0.38)
    cy = min(h * rng.uniform(0.3, 0.42), 0.95 * h - f * cam_h / STOP_Z)
    background = _background(rng, cfg, f, cx, cy, cam_h)
    tracks: list[_Track] = []
    t_free = -1e9
    for i in range(n_cars):
        car = _make_car(rng, ppm=f / 2.0)
        z_far, v0 = rng.uniform(18, 26), rng.uniform(6, 9)
        approach = 2 * (z_far - STOP_Z) / v0
        t0 = -rng.uniform(0.1, 0.7) * approach if i == 0 else tracks[-1].t_go + rng.uniform(0.5, 2.0)
        t_stop = max(t0 + approach, t_free + 0.3)
        t_lift = t_stop + rng.uniform(0.8, 2.0)
        t_go = t_lift + LIFT_S + rng.uniform(0.1, 0.5)
        accel = rng.uniform(1.5, 2.5)
        t_down = t_go + math.sqrt(2 * (STOP_Z - 2.0) / accel) + 1.0
        t_free = t_down + LIFT_S
        tracks.append(_Track(car, rng.uniform(0.85, 1.15), t0, t_stop, t_lift, t_go, t_down, z_far, accel))
        if t_stop > seconds:
            break
    light = (
        rng.uniform(0.7, 1.15),
        rng.uniform(0.03, 0.15),
        rng.uniform(8, 30),
        rng.uniform(0, 2 * math.pi),
        tuple(rng.uniform(0.92, 1.08, 3)),
    )
    sigma = rng.uniform(2.0, 5.0)
    n = rng.standard_normal((h + 16, w, 3), dtype=np.float32) * sigma
    pos, neg = np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)
    flips = [(slice(None), slice(None)), (slice(None), slice(None, None, -1)), (slice(None, None, -1), slice(None))]
    noise = [(np.ascontiguousarray(pos[fl]), np.ascontiguousarray(neg[fl])) for fl in flips[:n_noise]]
    arm_colour = (40, 40, 210) if rng.random() < 0.7 else (20, 20, 20)
    return Scene(cfg, f, cx, cy, cam_h, background, tracks, light, noise, rng.uniform(0.02, 0.1), arm_colour)


def _placement(scene: Scene, car: _Car, x: float, z: float) -> tuple[int, int, int, int, np.ndarray]:
    """Integer placement (u0, v0, width, height) of the car sprite at depth z and its plate quad in the frame."""
    s = scene.f / (z * car.ppm)
    big_h, big_w = car.levels[0].shape[:2]
    nw, nh = max(1, round(big_w * s)), max(1, round(big_h * s))
    u0 = round(scene.cx + scene.f * (x + car.left_m) / z)
    v0 = round(scene.cy + scene.f * scene.cam_h / z - car.ground_row * s)
    return u0, v0, nw, nh, car.quad * [nw / big_w, nh / big_h] + [u0, v0]


def _paste(frame: np.ndarray, sprite: np.ndarray, u0: int, v0: int) -> None:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = max(u0, 0), max(v0, 0), min(u0 + sprite.shape[1], w), min(v0 + sprite.shape[0], h)
    if x1 >= x2 or y1 >= y2:
        return
    spr = sprite[y1 - v0 : y2 - v0, x1 - u0 : x2 - u0]
    a3 = cv2.cvtColor(np.ascontiguousarray(spr[..., 3]), cv2.COLOR_GRAY2BGR)
    roi = frame[y1:y2, x1:x2]
    roi[:] = cv2.add(cv2.multiply(spr[..., :3], a3, scale=1 / 255), cv2.multiply(roi, 255 - a3, scale=1 / 255))


def _arm_polygon(scene: Scene, level: float) -> np.ndarray:
    ang = math.radians(ARM_MAX_DEG) * (3 * level**2 - 2 * level**3)
    px, length, half = -0.6, 3.4, 0.04
    ends = [(px, ARM_Y), (px + length * math.cos(ang), ARM_Y + length * math.sin(ang))]
    nx, ny = -math.sin(ang) * half, math.cos(ang) * half
    world = [(ends[0][0] + nx, ends[0][1] + ny), (ends[1][0] + nx, ends[1][1] + ny)]
    world += [(ends[1][0] - nx, ends[1][1] - ny), (ends[0][0] - nx, ends[0][1] - ny)]
    return np.array([scene.project(wx, wy, BARRIER_Z) for wx, wy in world], np.float32)


def _render(
    scene: Scene, poses: list[tuple[_Car, tuple[float, float], tuple[float, float] | None]], arm_level: float, t: float
) -> tuple[np.ndarray, list[_Corners], list[float]]:
    """Composites one frame; returns it, the label boxes (pixels) and each labelled-or-not plate's occluded
    fraction."""
    cfg = scene.cfg
    frame = scene.background.copy()
    plates: list[tuple[np.ndarray, float, str]] = []  # (tight box x1 y1 x2 y2, occluded fraction, kind)
    for car, (x, z), prev in sorted(poses, key=lambda p: -p[1][1]):
        u0, v0, nw, nh, quad = _placement(scene, car, x, z)
        if u0 >= cfg.width or v0 >= cfg.height or u0 + nw <= 0 or v0 + nh <= 0:
            continue
        level = next((lv for lv in reversed(car.levels) if lv.shape[1] >= nw), car.levels[0])
        sprite = cv2.resize(level, (nw, nh), interpolation=cv2.INTER_LINEAR)  # level is < 2x the target: no aliasing
        if prev is not None:
            d = scene.exposure * (quad.mean(0) - _placement(scene, car, *prev)[4].mean(0))
            length = float(np.hypot(*d))
            if length >= 1.0:
                k = math.ceil(length) | 1
                kernel = np.zeros((k, k), np.float32)
                c = k // 2
                cv2.line(
                    kernel, (round(c - d[0] / 2), round(c - d[1] / 2)), (round(c + d[0] / 2), round(c + d[1] / 2)), 1.0
                )
                sprite = cv2.filter2D(sprite, -1, kernel / kernel.sum())
        for i, (box, occ, kind) in enumerate(plates):  # this nearer car may hide earlier plates
            bx1, by1, bx2, by2 = np.round(box).astype(int)
            sub = sprite[max(by1 - v0, 0) : max(by2 - v0, 0), max(bx1 - u0, 0) : max(bx2 - u0, 0), 3]
            plates[i] = (box, occ + float((sub > 128).sum()) / max(1, (bx2 - bx1) * (by2 - by1)), kind)
        _paste(frame, sprite, u0, v0)
        plates.append((np.array([*quad.min(0), *quad.max(0)]), 0.0, car.kind))
    arm = np.round(_arm_polygon(scene, arm_level) * 16).astype(np.int32)
    arm_mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(arm_mask, [arm], 255, cv2.LINE_8, shift=4)
    cv2.fillPoly(frame, [arm], scene.arm_colour, cv2.LINE_AA, shift=4)
    a, b = arm[0], arm[1]  # white stripes along the arm
    for j in range(1, 8, 2):
        seg = [a + (b - a) * j / 8, a + (b - a) * (j + 1) / 8]
        seg = np.array([seg[0], seg[1], seg[1] + arm[2] - arm[1], seg[0] + arm[3] - arm[0]], np.int32)
        cv2.fillPoly(frame, [seg], (235, 235, 235), cv2.LINE_AA, shift=4)
    base, amp, period, phase, tint = scene.light
    gain = base * (1 + amp * math.sin(2 * math.pi * t / period + phase))
    lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * (gain * np.array(tint, np.float32)), 0, 255)
    cv2.LUT(frame, lut.astype(np.uint8)[:, None, :], dst=frame)
    k, r = int(t * cfg.fps) % len(scene.noise), int(t * cfg.fps * 7) % 16
    pos, neg = scene.noise[k]
    cv2.add(frame, pos[r : r + cfg.height], dst=frame)
    cv2.subtract(frame, neg[r : r + cfg.height], dst=frame)
    boxes: list[_Corners] = []
    occluded: list[float] = []
    for box, occ, kind in plates:
        bx1, by1, bx2, by2 = np.round(box).astype(int)
        ins = arm_mask[max(by1, 0) : max(by2, 0), max(bx1, 0) : max(bx2, 0)]
        occ = min(1.0, occ + float((ins > 0).sum()) / max(1, (bx2 - bx1) * (by2 - by1)))
        mw, mh, dy = LABEL_MARGIN[kind]
        (cxp, cyp), (bw, bh) = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) * [mw, mh]
        cyp += dy * (box[3] - box[1])
        full = np.array([cxp - bw / 2, cyp - bh / 2, cxp + bw / 2, cyp + bh / 2])
        clipped = np.clip(full, 0, [cfg.width, cfg.height, cfg.width, cfg.height])
        area = float(np.prod(np.maximum(clipped[2:] - clipped[:2], 0)))
        occluded.append(occ)
        if occ <= 0.3 and area >= 0.6 * float(np.prod(full[2:] - full[:2])) and clipped[2] - clipped[0] >= MIN_LABEL_PX:
            boxes.append(tuple(float(v) for v in clipped))
    return frame, boxes, occluded


def make_video_scene(seed: int, index: int, seconds: float, cfg: SynthConfig = SynthConfig()) -> Scene:
    """The scene behind video `index` of `seed`, so any of its frames can be re-rendered with labels later."""
    if seed < 0 or index < 0 or not seconds > 0:
        raise ValueError(f"need seed >= 0, index >= 0, seconds > 0; got {seed}, {index}, {seconds}")
    rng = np.random.default_rng([0, seed, index])  # domain 0: videos (holdout uses domain 1)
    return _make_scene(rng, cfg, n_cars=max(1, math.ceil(seconds / 4)), seconds=seconds, n_noise=3)


def render_scene_frame(scene: Scene, frame_idx: int) -> tuple[np.ndarray, list[Box]]:
    """Frame `frame_idx` (BGR uint8) of a video scene and its plate label boxes (class 0)."""
    t, dt = frame_idx / scene.cfg.fps, 1.0 / scene.cfg.fps
    poses = [(tr.car, p, tr.pose(t - dt)) for tr in scene.tracks if (p := tr.pose(t)) is not None]
    frame, corners, _ = _render(scene, poses, max((tr.arm(t) for tr in scene.tracks), default=0.0), t)
    return frame, _boxes(corners, scene.cfg)


def _boxes(corners: list[_Corners], cfg: SynthConfig) -> list[Box]:
    """Pixel corners as class-0 label boxes, normalised to the frame."""
    w, h = cfg.width, cfg.height
    return [Box.from_xyxy(0, x1 / w, y1 / h, x2 / w, y2 / h) for x1, y1, x2, y2 in corners]


def write_videos(out_dir: Path, n: int, seconds: float, seed: int, cfg: SynthConfig = SynthConfig()) -> list[Path]:
    """Writes n videos named gate_{seed:04d}_{i:02d}.mp4 into out_dir; returns their paths (sorted).

    Each file is encoded under a hidden temp name and renamed when complete, so a killed run leaves no partial video.
    """
    if n < 1 or not seconds > 0 or seed < 0:
        raise ValueError(f"need n >= 1, seconds > 0, seed >= 0; got n={n}, seconds={seconds}, seed={seed}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    n_frames = max(1, round(seconds * cfg.fps))
    for i in range(n):
        final = out_dir / f"gate_{seed:04d}_{i:02d}.mp4"
        tmp = out_dir / f".tmp_{final.stem}_{os.getpid()}.mp4"
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(cfg.fps), (cfg.width, cfg.height))
        try:
            if not writer.isOpened():
                raise RuntimeError(f"cv2.VideoWriter cannot open {tmp} with mp4v")
            scene = make_video_scene(seed, i, seconds, cfg)
            for j in range(n_frames):
                writer.write(render_scene_frame(scene, j)[0])
            writer.release()
            os.replace(tmp, final)
        finally:
            writer.release()
            tmp.unlink(missing_ok=True)
        log.info("wrote %s (%d frames, %dx%d@%d)", final, n_frames, cfg.width, cfg.height, cfg.fps)
        paths.append(final)
    return sorted(paths)


def render_holdout_frame(seed: int, i: int, cfg: SynthConfig = SynthConfig()) -> tuple[np.ndarray, list[Box]]:
    """Holdout frame i: its own scene (domain 1 of the seed space, never a video's), one fully visible plate."""
    rng = np.random.default_rng([1, seed, i])
    scene = _make_scene(rng, cfg, n_cars=1, seconds=1.0, n_noise=1)
    track = scene.tracks[0]
    for _ in range(100):
        px = rng.uniform(90, 230) if rng.random() < 0.9 else rng.uniform(60, 90)  # mostly detectable sizes
        z = float(np.clip(scene.f * PLATE_M[track.car.kind][0] / (px * cfg.width / 1280), 2.6, 30))
        x = track.x + (0.7 * (STOP_Z - z) ** 2 if z < STOP_Z else 0.0)
        moving = rng.random() < 0.5
        prev = (x, z + rng.uniform(0.0, 4.0) / cfg.fps) if moving else None
        level = 1.0 if z < BARRIER_Z + 0.3 else float(rng.choice([0.0, 0.0, 1.0, rng.uniform(0, 1)]))
        u0, _, nw, _, _ = _placement(scene, track.car, x, z)
        if min(u0 + nw, cfg.width) - max(u0, 0) < 0.9 * nw:  # keep the car's front in view: natural gate framing
            continue
        frame, corners, occ = _render(scene, [(track.car, (x, z), prev)], level, rng.uniform(0, 30))
        if len(corners) == 1 and occ[0] == 0.0 and corners[0][3] < 0.98 * cfg.height:
            return frame, _boxes(corners, cfg)
    raise RuntimeError(f"no visible plate found for holdout frame {seed}/{i}")


# a labelled holdout is ours when it holds holdout.json beside images/ and labels/ only (no marker: its files are
# hashed into the rebuild's fingerprint); any other folder is refused, never replaced
HOLDOUT_OUTPUT = OutputFolder("paths.holdout", HOLDOUT_JSON, frozenset({"images", "labels"}), marked=False)


def write_holdout(out_dir: Path, n_frames: int, seed: int, cfg: SynthConfig = SynthConfig()) -> Path:
    """Writes out_dir/images/*.jpg and out_dir/labels/*.txt (YOLO format); returns out_dir.

    Frames come from scenes seeded in a separate domain from any video, so the detector is never validated on the
    videos' own frames. Built in a temp sibling folder that replaces out_dir only once complete, and only when
    out_dir is absent, empty or a holdout this project wrote (`HOLDOUT_OUTPUT`; else `NotOurFolder`).
    """
    if n_frames < 1 or seed < 0:
        raise ValueError(f"need n_frames >= 1 and seed >= 0; got n_frames={n_frames}, seed={seed}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, HOLDOUT_OUTPUT) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for i in range(n_frames):
            frame, boxes = render_holdout_frame(seed, i, cfg)
            stem = f"holdout_{seed:04d}_{i:05d}"
            if not cv2.imwrite(str(tmp / "images" / f"{stem}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise RuntimeError(f"cv2.imwrite failed for {stem}.jpg")
            (tmp / "labels" / f"{stem}.txt").write_text(yolo_text(boxes))
        info = {"source": "synthetic", "seed": seed, "images": n_frames, "videos": []}  # no gate video was used
        (tmp / HOLDOUT_JSON).write_text(json.dumps(info, indent=2) + "\n")
    log.info("wrote holdout %s (%d frames)", out_dir, n_frames)
    return out_dir
