"""Label Studio over REST: push a proposal (frames plus the detector's pre-labels) for review, pull the reviewed boxes.

Label Studio runs in its own environment (its pins clash with the project's); this module only speaks HTTP to it
(`httpx`, which Prefect already brings). The connection comes from `LABEL_STUDIO_URL` and `LABEL_STUDIO_API_KEY`,
the names Label Studio's own SDK reads. The key is a personal access token (a refresh JWT, from Account & Settings
or `POST /api/token/`), exchanged at `/api/token/refresh/` for a 5-minute access token that is renewed before it
expires; a key that is not a JWT is sent as a legacy `Authorization: Token`.

Boxes: YOLO `cls cx cy w h [conf]` (normalised centre and size) in `labels/<stem>.txt`, read by the holdout's own
label reader, and Label Studio rectangles in percent of the image with (x, y) the top-left corner. A task's file name
is the uploaded one without the 8-hex prefix Label Studio adds; Label Studio does not deduplicate uploads, so `push`
compares names itself.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin
from xml.sax.saxutils import quoteattr

import httpx
from PIL import Image

from tasks.pipeline.labels import Box, read_label_file
from tasks.support.errors import AlprError

URL_ENV = "LABEL_STUDIO_URL"
KEY_ENV = "LABEL_STUDIO_API_KEY"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # stored unchanged by Label Studio's file storage
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
UPLOAD_BATCH = 50  # files per import request (Label Studio accepts at most 100)
PAGE = 100

INSTRUCTIONS = """<h3>Licence plates: check every box</h3>
<ul>
<li>Box the plate with the margin the detector itself draws: about 1.6&times; the plate height for single-line
plates, centred on the plate. Move or resize a box that is off.</li>
<li>Delete false boxes (signs, lights, bumper stickers).</li>
<li>Add every plate the detector missed, if you can see it is a plate.</li>
<li>A frame with no plate: submit it with no box (an empty result).</li>
<li>Skip a frame you cannot judge (too dark, too blurred).</li>
</ul>"""


class LabelStudioError(AlprError):
    """Label Studio is not configured, not reachable, refused the token, or holds data that cannot be read back.
    `transient`: worth retrying as is (the server did not answer)."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool = False, **facts: Any) -> None:
        super().__init__(message, transient=transient, **facts)
        self.transient = transient


def label_config(names: Sequence[str]) -> str:
    """The labelling interface: the image, and one rectangle label per class name (in class order)."""
    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in names)
    return (
        '<View>\n  <Image name="image" value="$image" zoom="true" zoomControl="true"/>\n'
        f'  <RectangleLabels name="label" toName="image">\n{labels}\n  </RectangleLabels>\n</View>'
    )


def instructions() -> str:
    """The reviewer's instructions (HTML, shown by Label Studio before labelling)."""
    return INSTRUCTIONS


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (not verified: the server does that), None when `token` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    except ValueError:
        return None
    return payload if isinstance(header, dict) and "alg" in header and isinstance(payload, dict) else None


class LabelStudio:
    """A Label Studio server: `url` (e.g. http://127.0.0.1:8080) and an API key (personal access token or legacy)."""

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._key = api_key.strip()
        self._pat = _jwt_claims(self._key) is not None
        self.token_type = "personal access token" if self._pat else "legacy API token"
        self._access: str | None = None
        self._access_exp = 0.0
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, follow_redirects=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, timeout_s: float = 60.0) -> LabelStudio:
        env = os.environ if environ is None else environ
        missing = [name for name in (URL_ENV, KEY_ENV) if not env.get(name, "").strip()]
        if missing:
            raise LabelStudioError(
                f"Label Studio is not configured: set {URL_ENV} (the server, e.g. http://127.0.0.1:8080) and "
                f"{KEY_ENV} (a personal access token from Account & Settings); missing: {', '.join(missing)}",
                missing=missing,
            )
        return cls(env[URL_ENV].strip(), env[KEY_ENV], timeout_s=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- authentication
    def _auth_header(self, renew: bool = False) -> str:
        if not self._pat:
            return f"Token {self._key}"
        if renew or self._access is None or time.time() > self._access_exp - 30:
            resp = self._send("POST", "/api/token/refresh/", {}, json={"refresh": self._key})
            if resp.status_code in (400, 401, 403):
                self._refused(resp)
            self._check(resp, "POST", "/api/token/refresh/")
            self._access = resp.json()["access"]
            claims = _jwt_claims(self._access) or {}
            self._access_exp = float(claims.get("exp", time.time() + 240))
        return f"Bearer {self._access}"

    def _refused(self, resp: httpx.Response) -> None:
        raise LabelStudioError(
            f"Label Studio at {self.url} refused the {self.token_type} in {KEY_ENV} (HTTP {resp.status_code}): "
            f"{_detail(resp)}. Create a new personal access token in Account & Settings.",
            url=self.url,
            token_type=self.token_type,
            status=resp.status_code,
        )

    # --- requests
    def _send(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadTimeout) as e:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} ({type(e).__name__}: {e}); is the server running?",
                transient=True,
                url=self.url,
            ) from e

    def _check(self, resp: httpx.Response, method: str, path: str) -> httpx.Response:
        if resp.is_success:
            return resp
        raise LabelStudioError(
            f"Label Studio at {self.url}: {method} {path} answered HTTP {resp.status_code}: {_detail(resp)}",
            transient=resp.status_code in (502, 503, 504),
            url=self.url,
            status=resp.status_code,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One authenticated request (`path` relative to the server, or absolute on it); raises LabelStudioError."""
        resp = self._send(method, path, {"Authorization": self._auth_header()}, **kwargs)
        if resp.status_code == 401 and self._pat:  # the access token expired early: renew once
            resp = self._send(method, path, {"Authorization": self._auth_header(renew=True)}, **kwargs)
        if resp.status_code == 401:
            self._refused(resp)
        return self._check(resp, method, path)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("POST", path, json=body, params=params).json()

    def download(self, url: str) -> bytes:
        """The bytes behind a task's `data.image` (e.g. /data/upload/1/ab12cd34-frame.jpg)."""
        return self.request("GET", urljoin(self.url + "/", url)).content

    # --- projects and tasks
    def find_project(self, title: str) -> dict[str, Any] | None:
        page = 1
        while True:
            res = self.get("/api/projects", title=title, page=page, page_size=PAGE)
            for p in res["results"]:
                if p["title"] == title:
                    return p
            if not res.get("next"):
                return None
            page += 1

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project (id and data; paginated by the server, 404 past the last page)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = self._send(
                "GET",
                "/api/tasks",
                {"Authorization": self._auth_header()},
                params={"project": project_id, "page": page, "page_size": PAGE},
            )
            if resp.status_code == 404 and page > 1:
                return out
            if resp.status_code == 401:
                self._refused(resp)
            res = self._check(resp, "GET", "/api/tasks").json()
            out += res["tasks"]
            if len(out) >= res["total"] or not res["tasks"]:
                return out
            page += 1

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """All tasks with their annotations and predictions (JSON export)."""
        return self.get(f"/api/projects/{project_id}/export", exportType="JSON", download_all_tasks="true")


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        text = body.get("detail") or body.get("validation_errors") or body if isinstance(body, dict) else body
    except ValueError:
        text = resp.text
    return str(text)[:300]


def task_file_name(task: Mapping[str, Any]) -> str:
    """The original file name of an uploaded task: data.image /data/upload/<project>/<8 hex>-<name>."""
    base = unquote(str(task["data"].get("image", "")).rsplit("/", 1)[-1])
    return UPLOAD_PREFIX.sub("", base, count=1)


# --------------------------------------------------------------------------- box conversion
def interface(config: str) -> tuple[str, str, list[str]]:
    """From a label config: the RectangleLabels' name, its image's name, and the label values in order."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError as e:
        raise LabelStudioError(f"the label config is not valid XML: {e}") from e
    rect = root.find(".//RectangleLabels")
    if rect is None:
        raise LabelStudioError("the label config has no <RectangleLabels> to put the boxes in")
    return rect.get("name", "label"), rect.get("toName", "image"), [lab.get("value", "") for lab in rect.iter("Label")]


def yolo_to_region(box: Box, label: str, size: tuple[int, int], names: tuple[str, str]) -> dict:
    """A YOLO box as a Label Studio rectangle (percent of the image, top-left corner; its `conf` as the score)."""
    cx, cy, w, h = box.cx, box.cy, box.w, box.h
    region: dict[str, Any] = {
        "id": uuid.uuid4().hex[:10],
        "from_name": names[0],
        "to_name": names[1],
        "type": "rectanglelabels",
        "original_width": size[0],
        "original_height": size[1],
        "image_rotation": 0,
        "value": {
            "x": (cx - w / 2) * 100,
            "y": (cy - h / 2) * 100,
            "width": w * 100,
            "height": h * 100,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }
    if box.conf is not None:
        region["score"] = box.conf
    return region


def region_to_yolo(value: Mapping[str, Any], size: tuple[float, float] | None) -> tuple[float, float, float, float]:
    """A Label Studio rectangle (percent) as YOLO cx, cy, w, h, clipped to the image. A rotated rectangle (rotation
    about its top-left corner, in pixels) becomes the axis-aligned box around it."""
    x, y, w, h = (float(value[k]) / 100 for k in ("x", "y", "width", "height"))
    angle = math.radians(float(value.get("rotation") or 0))
    if angle:
        sw, sh = size or (1.0, 1.0)
        cos, sin = math.cos(angle), math.sin(angle)
        corners = [(x * sw + u * cos - v * sin, y * sh + u * sin + v * cos) for u, v in
                   ((0, 0), (w * sw, 0), (0, h * sh), (w * sw, h * sh))]  # fmt: skip
        xs, ys = [c[0] / sw for c in corners], [c[1] / sh for c in corners]
        x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(1.0, x + w), min(1.0, y + h)
    return (x1 + x2) / 2, (y1 + y2) / 2, max(0.0, x2 - x1), max(0.0, y2 - y1)


def read_prelabels(path: Path, labels: Sequence[str]) -> list[Box]:
    """A proposal frame's pre-labels (`cls cx cy w h [conf]`; class i is the config's i-th label), by the holdout's
    own label reader; no file: the frame has none. Every problem is listed as `path:line: what`."""
    if not path.is_file():
        return []
    boxes, problems = read_label_file(path, len(labels), labels, scores=True)
    if problems:
        listed = "".join(f"\n  {p}" for p in problems)
        raise LabelStudioError(f"{path}: pre-labels that cannot be used:{listed}", path=str(path), problems=problems)
    return boxes


# --------------------------------------------------------------------------- push
@dataclass(frozen=True)
class PushResult:
    project_id: int
    url: str  # the project's data manager
    created: bool  # the project did not exist
    uploaded: tuple[str, ...]  # file names uploaded now
    already_there: tuple[str, ...]  # file names the project already had (not uploaded again)
    predictions: int  # pre-label predictions added (one per uploaded image)


def proposal_images(proposal_dir: Path) -> list[Path]:
    """The proposal's frames: `images/` when present (YOLO layout), else the folder itself."""
    folder = proposal_dir / "images" if (proposal_dir / "images").is_dir() else proposal_dir
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def push(
    client: LabelStudio,
    proposal_dir: Path,
    title: str,
    label_config: str,
    instructions: str,
    *,
    model_version: str = "prelabel",
) -> PushResult:
    """Put the proposal up for review: the project `title` (created with `label_config` and `instructions` when
    missing), every frame it does not have yet, and for each new frame the pre-labels of `labels/<stem>.txt`
    (`cls cx cy w h [conf]`; class i is the config's i-th label) as a prediction of `model_version`."""
    interface(label_config)  # a valid config before anything is created
    images = proposal_images(proposal_dir)
    if not images:
        raise LabelStudioError(f"no images (*.jpg, *.jpeg, *.png) in the proposal {proposal_dir}", path=proposal_dir)
    unsafe = [p.name for p in images if not SAFE_NAME.match(p.name)]
    if unsafe:
        raise LabelStudioError(
            f"Label Studio renames uploads with other characters than letters, digits, '.', '_' and '-', so they "
            f"could not be matched again: {', '.join(unsafe[:5])}",
            files=unsafe,
        )
    project = client.find_project(title)
    created = project is None
    if project is None:
        body = {"title": title, "label_config": label_config, "expert_instruction": instructions}
        project = client.post("/api/projects", {**body, "show_instruction": True})
    pid = int(project["id"])
    # the boxes go into the interface the project has (an existing project keeps its own config)
    from_name, to_name, labels = interface(client.get(f"/api/projects/{pid}")["label_config"])
    known = {task_file_name(t) for t in client.tasks(pid)}
    new = [p for p in images if p.name not in known]
    # every new frame's pre-labels are read before any upload: a frame uploaded without them would not get them later
    prelabels = {p.name: read_prelabels(proposal_dir / "labels" / f"{p.stem}.txt", labels) for p in new}
    for i in range(0, len(new), UPLOAD_BATCH):
        # one form field per file: Label Studio keeps one file per field name
        files = [(p.name, (p.name, p.read_bytes(), _mime(p))) for p in new[i : i + UPLOAD_BATCH]]
        client.request("POST", f"/api/projects/{pid}/import", files=files)
    by_name = {task_file_name(t): t["id"] for t in client.tasks(pid)}
    predictions = []
    for p in new:
        boxes = prelabels[p.name]
        with Image.open(p) as im:
            size = im.size
        regions = [yolo_to_region(box, labels[box.cls], size, (from_name, to_name)) for box in boxes]
        scores = [box.conf for box in boxes if box.conf is not None]
        pred: dict[str, Any] = {"task": by_name[p.name], "model_version": model_version, "result": regions}
        if scores:
            pred["score"] = max(scores)
        predictions.append(pred)
    created_n = client.post(f"/api/projects/{pid}/import/predictions", predictions)["created"] if predictions else 0
    return PushResult(
        project_id=pid,
        url=client.project_url(pid),
        created=created,
        uploaded=tuple(p.name for p in new),
        already_there=tuple(p.name for p in images if p.name in known),
        predictions=int(created_n),
    )


def _mime(path: Path) -> str:
    return "image/png" if path.suffix.lower() == ".png" else "image/jpeg"


# --------------------------------------------------------------------------- pull
@dataclass(frozen=True)
class PullResult:
    project_id: int
    title: str
    url: str
    reviewed: dict[str, list[Box]]  # file name -> boxes (empty: reviewed, no plate)
    skipped: list[str]  # only skipped (cancelled) annotations
    unreviewed: list[str]  # no annotation yet
    images: dict[str, str]  # file name -> image URL on the server (every task), see `download_images`


def pull(client: LabelStudio, title: str, names: Sequence[str]) -> PullResult:
    """Read the project `title` back: per frame reviewed (its latest submitted annotation, as YOLO boxes with the
    class index of the rectangle's label in `names`), skipped, or not reviewed yet."""
    project = client.find_project(title)
    if project is None:
        raise LabelStudioError(f"Label Studio at {client.url} has no project titled {title!r}", title=title)
    pid = int(project["id"])
    reviewed: dict[str, list[Box]] = {}
    skipped: list[str] = []
    unreviewed: list[str] = []
    images: dict[str, str] = {}
    for task in sorted(client.export(pid), key=lambda t: t["id"]):
        name = task_file_name(task)
        if name in images:
            raise LabelStudioError(
                f"project {title!r} holds {name} twice (task {task['id']} and an earlier one); delete one of them",
                task=task["id"],
            )
        images[name] = task["data"]["image"]
        annotations = task.get("annotations") or []
        done = [a for a in annotations if not a.get("was_cancelled")]
        if done:
            latest = max(done, key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id", 0)))
            reviewed[name] = _boxes(latest.get("result") or [], names, task, name)
        elif annotations:
            skipped.append(name)
        else:
            unreviewed.append(name)
    return PullResult(pid, project["title"], client.project_url(pid), reviewed, skipped, unreviewed, images)


def _boxes(result: Sequence[Mapping[str, Any]], names: Sequence[str], task: Mapping[str, Any], name: str) -> list[Box]:
    boxes: list[Box] = []
    for region in result:
        if region.get("type") != "rectanglelabels":
            continue
        value = region["value"]
        label = (value.get("rectanglelabels") or [None])[0]
        if label not in names:
            raise LabelStudioError(
                f"task {task['id']} ({name}) has a box labelled {label!r}, which is not a class of the model "
                f"({', '.join(names)})",
                task=task["id"],
                label=label,
            )
        size = (region["original_width"], region["original_height"]) if "original_width" in region else None
        boxes.append(Box(list(names).index(label), *region_to_yolo(value, size)))
    return boxes


def download_images(
    client: LabelStudio, pulled: PullResult, dest: Path, which: Sequence[str] | None = None
) -> dict[str, Path]:
    """Save the reviewed frames (or `which`) into `dest` under their file names; returns name -> path."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name in pulled.reviewed if which is None else which:
        path = dest / name
        tmp = path.with_name(f".{name}.part")
        tmp.write_bytes(client.download(pulled.images[name]))
        tmp.replace(path)
        out[name] = path
    return out
