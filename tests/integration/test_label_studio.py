"""Push a proposal to a real Label Studio (offline, its own venv), review it through the REST API as a person would
in the UI, and pull the reviewed boxes back (tests/labelstudio.py starts the server)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from labelstudio import Server, legacy_token, write_proposal

from tasks.operations.label_studio import (
    KEY_ENV,
    URL_ENV,
    LabelStudio,
    LabelStudioError,
    download_images,
    instructions,
    label_config,
    pull,
    push,
)
from tasks.pipeline.labels import Box

pytestmark = pytest.mark.integration

NAMES = ["License_Plate"]
TITLE = "alpr-ops holdout"
W, H = 320, 240  # write_proposal's frames
# file name -> pre-labels (cls cx cy w h conf): what the detector proposed
PRELABELS = {
    "frame_0.jpg": [(0, 0.5, 0.6, 0.3, 0.1, 0.91)],  # accepted as is
    "frame_1.jpg": [(0, 0.4, 0.5, 0.2, 0.08, 0.8), (0, 0.1, 0.1, 0.05, 0.05, 0.2)],  # move one, delete one, add one
    "frame_2.jpg": [(0, 0.3, 0.3, 0.1, 0.05, 0.15)],  # no plate: empty result
    "frame_3.jpg": [(0, 0.6, 0.7, 0.2, 0.1, 0.5)],  # skipped
    "frame_4.jpg": [(0, 0.45, 0.55, 0.25, 0.1, 0.7)],  # left unreviewed
}


def close(actual: list[Box], expected: list[tuple]) -> bool:
    return len(actual) == len(expected) and all(
        a.cls == e[0] and np.allclose((a.cx, a.cy, a.w, a.h), e[1:5], atol=1e-4)
        for a, e in zip(actual, expected, strict=True)
    )


@pytest.mark.timeout(240)
def test_push_review_pull(label_studio: Server, tmp_path: Path) -> None:
    with LabelStudio(label_studio.url, label_studio.api_key) as ls:
        proposal = write_proposal(tmp_path / "proposal", PRELABELS)
        config = label_config(NAMES)
        first = push(ls, proposal, TITLE, config, instructions())
        assert first.created and first.predictions == 5
        assert sorted(first.uploaded) == sorted(PRELABELS) and first.already_there == ()
        project = ls.get(f"/api/projects/{first.project_id}")
        assert project["title"] == TITLE and project["label_config"] == config
        assert project["expert_instruction"] == instructions() and "1.6" in project["expert_instruction"]
        assert first.url == f"{label_studio.url}/projects/{first.project_id}/data"

        tasks = {t["data"]["image"].rsplit("-", 1)[-1]: t["id"] for t in ls.tasks(first.project_id)}
        assert sorted(tasks) == sorted(PRELABELS)
        predictions = {name: ls.get("/api/predictions", task=tid) for name, tid in tasks.items()}
        for name, boxes in PRELABELS.items():
            (pred,) = predictions[name]
            assert pred["model_version"] == "prelabel" and pred["score"] == pytest.approx(max(b[5] for b in boxes))
            for region, (_, cx, cy, w, h, conf) in zip(pred["result"], boxes, strict=True):
                v = region["value"]
                assert (region["original_width"], region["original_height"]) == (W, H)
                assert v["rectanglelabels"] == ["License_Plate"] and region["score"] == pytest.approx(conf)
                got = (v["x"], v["y"], v["width"], v["height"])
                want = ((cx - w / 2) * 100, (cy - h / 2) * 100, w * 100, h * 100)
                assert np.allclose(got, want, atol=1e-4), (name, got, want)

        # the same proposal plus one new frame: only the new frame is uploaded and pre-labelled
        write_proposal(proposal, {**PRELABELS, "frame_5.jpg": [(0, 0.5, 0.5, 0.2, 0.1, 0.6)]})
        second = push(ls, proposal, TITLE, config, instructions())
        assert (second.project_id, second.created, second.uploaded, second.predictions) == (
            first.project_id, False, ("frame_5.jpg",), 1
        )  # fmt: skip
        assert sorted(second.already_there) == sorted(PRELABELS)
        third = push(ls, proposal, TITLE, config, instructions())
        assert (third.uploaded, third.predictions, len(third.already_there)) == ((), 0, 6)
        assert len(ls.tasks(first.project_id)) == 6
        assert ls.get(f"/api/projects/{first.project_id}")["total_predictions_number"] == 6

        # the reviewer, through the same REST calls the labelling UI makes
        def annotate(name: str, result: list, **extra) -> None:
            body = {"result": result, "was_cancelled": False, "lead_time": 3.0, **extra}
            ls.post(f"/api/tasks/{tasks[name]}/annotations/", body)

        p0 = predictions["frame_0.jpg"][0]
        annotate("frame_0.jpg", p0["result"], parent_prediction=p0["id"])  # accepted as is
        p1 = predictions["frame_1.jpg"][0]
        moved = copy.deepcopy(p1["result"][0])
        moved["value"]["x"] += 5.0  # moved right by 5 % of the width
        added = copy.deepcopy(moved)
        added["id"] = "missed01"
        added["value"].update(x=75.0, y=27.5, width=10.0, height=5.0)  # a plate the detector missed
        annotate("frame_1.jpg", [moved, added], parent_prediction=p1["id"])  # the false box (second) deleted
        annotate("frame_2.jpg", [])  # reviewed: no plate
        annotate("frame_3.jpg", [], was_cancelled=True)  # skipped
        # frame_4 and frame_5: not reviewed

        pulled = pull(ls, TITLE, NAMES)
        assert (pulled.project_id, pulled.title, pulled.url) == (first.project_id, TITLE, first.url)
        assert sorted(pulled.reviewed) == ["frame_0.jpg", "frame_1.jpg", "frame_2.jpg"]
        assert close(pulled.reviewed["frame_0.jpg"], [PRELABELS["frame_0.jpg"][0]])
        assert close(pulled.reviewed["frame_1.jpg"], [(0, 0.45, 0.5, 0.2, 0.08), (0, 0.8, 0.3, 0.1, 0.05)])
        assert pulled.reviewed["frame_2.jpg"] == []
        assert pulled.skipped == ["frame_3.jpg"]
        assert sorted(pulled.unreviewed) == ["frame_4.jpg", "frame_5.jpg"]

        saved = download_images(ls, pulled, tmp_path / "reviewed")
        assert sorted(saved) == sorted(pulled.reviewed)
        for name, path in saved.items():
            assert path.read_bytes() == (proposal / "images" / name).read_bytes()


@pytest.mark.timeout(120)
def test_label_not_in_names_names_the_task(label_studio: Server, tmp_path: Path) -> None:
    with LabelStudio(label_studio.url, label_studio.api_key) as ls:
        proposal = write_proposal(tmp_path / "proposal", {"frame_0.jpg": [(0, 0.5, 0.5, 0.2, 0.1, 0.9)]})
        pushed = push(ls, proposal, TITLE, label_config(["License_Plate", "Sign"]), instructions())
        (task,) = ls.tasks(pushed.project_id)
        (pred,) = ls.get("/api/predictions", task=task["id"])
        pred["result"][0]["value"]["rectanglelabels"] = ["Sign"]
        ls.post(f"/api/tasks/{task['id']}/annotations/", {"result": pred["result"], "was_cancelled": False})
        assert pull(ls, TITLE, ["License_Plate", "Sign"]).reviewed["frame_0.jpg"][0].cls == 1
        with pytest.raises(LabelStudioError, match=rf"task {task['id']} \(frame_0.jpg\).*'Sign'"):
            pull(ls, TITLE, NAMES)


@pytest.mark.timeout(120)
def test_configuration_and_token_errors(label_studio: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(LabelStudioError, match=f"{URL_ENV}.*{KEY_ENV}") as missing:
        LabelStudio.from_env()
    assert missing.value.facts["missing"] == [URL_ENV, KEY_ENV]
    monkeypatch.setenv(URL_ENV, label_studio.url)
    with pytest.raises(LabelStudioError, match=f"missing: {KEY_ENV}$"):
        LabelStudio.from_env()

    # from the environment, with the reviewer's personal access token: works
    monkeypatch.setenv(KEY_ENV, label_studio.api_key)
    with LabelStudio.from_env() as ls:
        assert ls.token_type == "personal access token"
        assert ls.get("/api/current-user/whoami")["email"] == label_studio.username

        # the 5-minute access token: renewed when it expires, and when the server refuses it early
        first, ls._access_exp = ls._access, 0.0
        assert ls.find_project(TITLE) is None and ls._access not in (None, first)
        ls._access = stale = f"{ls._access[:-4]}AAAA"  # a signature the server rejects (401)
        assert ls.find_project(TITLE) is None and ls._access != stale

    # a personal access token this server did not sign (another server's), and a legacy token
    head, _, sig = label_studio.api_key.rpartition(".")
    forged = f"{head}.{sig[::-1]}"
    for key, kind in ((forged, "personal access token"), ("0123456789abcdef0123456789abcdef", "legacy API token")):
        with LabelStudio(label_studio.url, key) as ls, pytest.raises(LabelStudioError, match="refused") as refused:
            ls.find_project(TITLE)
        assert kind in str(refused.value) and refused.value.facts["token_type"] == kind
        assert not refused.value.transient

    # a legacy token, once the organisation allows them again: sent as "Token <key>"
    with LabelStudio(label_studio.url, legacy_token(label_studio.url)) as ls:
        assert ls.token_type == "legacy API token"
        assert ls.get("/api/current-user/whoami")["email"] == label_studio.username

    # nothing listening: names the URL, transient (a retry may succeed)
    down = f"http://127.0.0.1:{free_port()}"
    with LabelStudio(down, label_studio.api_key) as ls, pytest.raises(LabelStudioError, match=down) as refused:
        ls.find_project(TITLE)
    assert refused.value.transient and refused.value.facts["transient"] is True
