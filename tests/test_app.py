"""The local web app: its API on a real server, and the page in headless Chromium (upload, one rendering per
ticked culture, each decoding at the photo's size)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from cyclegan_culture.app.server import create_app  # noqa: E402
from cyclegan_culture.pretrained import catalog  # noqa: E402
from tests.conftest import free_port, write_image  # noqa: E402

@pytest.fixture
def app_url(tiny_culture_home):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app("cpu"), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def post(url: str, data: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_api_lists_cultures_and_renders_at_the_photos_size(app_url, tmp_path):
    listed = json.loads(urllib.request.urlopen(app_url + "/api/cultures").read())
    assert {c["key"] for c in listed} == set(catalog.installed())
    photo = write_image(tmp_path / "p.jpg", (70, 45), seed=3)
    status, body = post(app_url + "/api/stylize?culture=" + listed[0]["key"], photo.read_bytes())
    assert status == 200
    assert Image.open(io.BytesIO(body)).size == (70, 45)


def test_api_explains_bad_uploads_in_one_line(app_url):
    key = next(iter(catalog.installed()))
    status, body = post(app_url + f"/api/stylize?culture={key}", b"this is not an image")
    assert status == 400
    error = json.loads(body)["error"]
    assert "not an image" in error and "\n" not in error
    status, body = post(app_url + "/api/stylize?culture=nope", b"x")
    assert status == 404 and "unknown culture" in json.loads(body)["error"]
    status, body = post(app_url + f"/api/stylize?culture={key}", b"")
    assert status == 400 and "empty" in json.loads(body)["error"]


def test_the_app_binds_to_loopback_by_default():
    from cyclegan_culture import cli

    with pytest.raises(SystemExit):
        cli._app(["--help"])
    import inspect

    from cyclegan_culture.app import server

    assert inspect.signature(server.serve).parameters["host"].default == "127.0.0.1"


# --- the page in a real browser (conftest's browser fixture: DevTools protocol) ----------------------------------
def test_page_uploads_a_photo_and_shows_one_rendering_per_ticked_culture(app_url, browser, tmp_path):
    keys = list(catalog.installed())
    assert len(keys) >= 2
    browser.call("Page.enable")
    browser.call("Page.navigate", url=app_url)
    browser.wait_for("document.body && document.body.dataset.ready === '1'")
    browser.evaluate(f"document.getElementById('c-{keys[-1]}').checked = false")  # untick one culture
    photo = write_image(tmp_path / "upload.png", (90, 60), seed=5)
    document = browser.call("DOM.getDocument")
    node = browser.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file")
    browser.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(photo)])
    ticked = len(keys) - 1
    browser.wait_for(f"document.querySelectorAll('.result img[data-done]').length === {ticked}")
    shown = browser.evaluate("[...document.querySelectorAll('.result')].map(d => d.dataset.culture)")
    assert shown == keys[:-1]
    sizes = browser.evaluate("[...document.querySelectorAll('.result img')].map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[90, 60]] * ticked
    first = browser.evaluate(
        "fetch(document.querySelector('.result img').src).then(r => r.arrayBuffer()).then(b => "
        "btoa(String.fromCharCode(...new Uint8Array(b))))", await_promise=True)
    assert Image.open(io.BytesIO(base64.b64decode(first))).size == (90, 60)
    downloads = browser.evaluate("[...document.querySelectorAll('.result a[download]')].map(a => a.download)")
    assert downloads == [f"upload_{k}.png" for k in keys[:-1]]
    shot = browser.call("Page.captureScreenshot", format="png")
    (tmp_path / "app.png").write_bytes(base64.b64decode(shot["data"]))
    assert Image.open(tmp_path / "app.png").size[0] > 0


def test_page_shows_a_clear_message_for_a_bad_file(app_url, browser, tmp_path):
    browser.call("Page.navigate", url=app_url)
    browser.wait_for("document.body && document.body.dataset.ready === '1'")
    bad = tmp_path / "notes.png"
    bad.write_text("not really a picture")
    document = browser.call("DOM.getDocument")
    node = browser.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file")
    browser.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(bad)])
    text = browser.wait_for("document.getElementById('message').textContent")
    assert "not an image" in text
