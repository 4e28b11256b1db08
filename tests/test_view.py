"""edgemed view in real headless Chromium, driven over the DevTools protocol: a real upload of a real image."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import edgemed
from edgemed.samples import samples_dir

from .conftest import DICOM, free_ports

websocket = pytest.importorskip("websocket", reason="websocket-client not installed (the dev extra has it)")
pytest.importorskip("flask", reason="flask not installed (pip install 'edgemed[view]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


def _wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {seconds:g} s")


class Browser:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate, set a file input, screenshot."""

    def __init__(self, tmp: Path) -> None:
        port = free_ports(1)[0]
        self.proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      f"--remote-debugging-port={port}", "--remote-allow-origins=*",
                                      f"--user-data-dir={tmp / 'profile'}", "--window-size=1400,1000", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_http(f"http://127.0.0.1:{port}/json/version")
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5).read())
        page = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        self.seq = 0

    def call(self, method: str, **params):
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.seq:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def until(self, expression: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.eval(expression):
                return
            time.sleep(0.2)
        pytest.fail(f"page never reached: {expression}")

    def upload(self, url: str, path: Path, until: str = "document.body.dataset.done === '1'") -> None:
        """Open the page, choose ``path`` in its file input (as a person would), press Analyse, wait for ``until``."""
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self.until("document.readyState === 'complete' && !!document.getElementById('file')")
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(path)])
        self.eval("document.getElementById('go').click()")
        self.until(until)

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def page(unet_bundle, tmp_path):
    yield from _viewer(unet_bundle, tmp_path)


@pytest.fixture
def cam_page(cnn_cam_bundle, tmp_path):
    """The page on the classifier converted with --explain cam (the session's bundle: no conversion of its own)."""
    yield from _viewer(cnn_cam_bundle, tmp_path)


def _viewer(bundle: Path, tmp_path: Path):
    """edgemed view on ``bundle`` as a user starts it, and a headless Chromium; both stopped afterwards."""
    port = free_ports(1)[0]
    server = subprocess.Popen([sys.executable, "-m", "edgemed.cli", "view", str(bundle), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    browser = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        browser = Browser(tmp_path)
        yield browser, f"http://127.0.0.1:{port}/"
    finally:
        if browser is not None:
            browser.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _largest_lesion_frame(unet_bundle) -> tuple[Path, np.ndarray]:
    with edgemed.load(unet_bundle) as pipe:
        scored = [(int((pipe.predict(p).mask > 0).sum()), p) for p in sorted(samples_dir("busi").glob("*.png"))]
        area, path = max(scored)
        return path, pipe.predict(path).mask


def test_an_uploaded_frame_comes_back_with_its_mask_drawn(page, unet_bundle, tmp_path):
    browser, url = page
    path, mask = _largest_lesion_frame(unet_bundle)
    browser.upload(url, path)
    facts = browser.eval("document.getElementById('facts').innerText")
    assert "verdict" in facts and "passed" in facts and "area lesion" in facts and "infer ms" in facts
    # a bundle without an explanation has no toggle, and the map layer stays hidden
    assert browser.eval("document.getElementById('show-explanation') === null && "
                        "document.getElementById('explain') === null && "
                        "getComputedStyle(document.getElementById('saliency')).display === 'none'")
    rect = browser.eval("JSON.stringify(document.getElementById('overlay').getBoundingClientRect())")
    r = json.loads(rect)
    shot = browser.screenshot()
    shown = shot[int(r["top"]):int(r["top"] + r["height"]), int(r["left"]):int(r["left"] + r["width"])].astype(int)
    # the lesion is tinted red (edgemed's overlay colour): the share of red pixels on screen matches the mask's
    red = (shown[:, :, 0] - shown[:, :, 1] > 40) & (shown[:, :, 0] - shown[:, :, 2] > 40)
    assert red.mean() == pytest.approx((mask > 0).mean(), rel=0.25, abs=0.002)
    assert (mask > 0).mean() > 0.01
    # and where: the red pixels' centre lies over the mask's centre
    ys, xs = np.nonzero(red)
    my, mx = np.nonzero(mask)
    assert abs(ys.mean() / red.shape[0] - my.mean() / mask.shape[0]) < 0.05
    assert abs(xs.mean() / red.shape[1] - mx.mean() / mask.shape[1]) < 0.05
    from PIL import Image

    Image.fromarray(shot.astype(np.uint8)).save(tmp_path / "view_screenshot.png")


def test_a_dicom_upload_offers_the_seg(page, tmp_path):
    import pydicom

    browser, url = page
    browser.upload(url, DICOM / "CT_small.dcm")
    href = browser.eval("document.getElementById('dl-seg') && document.getElementById('dl-seg').href")
    assert href and href.endswith(".seg.dcm")
    data = urllib.request.urlopen(href, timeout=10).read()
    seg = pydicom.dcmread(io.BytesIO(data))
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "lesion"
    assert browser.eval("!!document.getElementById('dl-sr')")


def test_bad_uploads_get_a_message_not_a_trace(page, tmp_path):
    browser, url = page
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    browser.upload(url, junk, until="!!document.querySelector('#facts .err')")
    text = browser.eval("document.querySelector('#facts .err').innerText")
    assert "junk.png" in text and "Traceback" not in text


def test_an_anonymous_dicom_gets_its_results_named_after_the_file(page, tmp_path):
    """Issue 20.5 and 20.12: a DICOM without PatientID is analysed (before: HTTP 500 and "analysing..." for good);
    the downloads carry the upload's name (before: result.seg.dcm for every upload) and messages no server path."""
    import pydicom

    browser, url = page
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    del ds.PatientID
    ds.save_as(tmp_path / "ct anonymous.dcm")
    browser.upload(url, tmp_path / "ct anonymous.dcm")
    href = browser.eval("document.getElementById('dl-seg') && document.getElementById('dl-seg').href")
    assert href and href.endswith("/ct_anonymous.seg.dcm")
    assert browser.eval("document.getElementById('dl-sr').textContent") == "ct_anonymous.sr.dcm"
    seg = pydicom.dcmread(io.BytesIO(urllib.request.urlopen(href, timeout=10).read()))
    assert "PatientID" in seg and seg.PatientID == ""
    browser.upload(url, DICOM / "liver_1frame.dcm", until="!!document.querySelector('#facts .err')")
    text = browser.eval("document.querySelector('#facts .err').innerText")
    assert text.startswith("liver_1frame.dcm: this Segmentation object is a result"), text
    assert "/tmp" not in text and "edgemed-view-" not in text


def test_a_server_failure_reaches_the_page_as_a_message(page, unet_bundle, tmp_path):
    """An answer that is not JSON (a proxy's or the framework's 500 page) ends "analysing..." with a message; the
    app itself answers an internal error as JSON with one line."""
    from edgemed.serve.view import make_app

    browser, url = page
    browser.call("Page.enable")
    browser.call("Page.navigate", url=url)
    browser.until("document.readyState === 'complete' && !!document.getElementById('file')")
    browser.eval("window.fetch = async () => new Response('<html>Internal Server Error</html>', "
                 "{status: 500, statusText: 'INTERNAL SERVER ERROR'})")
    root = browser.call("DOM.getDocument")["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    browser.call("DOM.setFileInputFiles", nodeId=node, files=[str(DICOM / "CT_small.dcm")])
    browser.eval("document.getElementById('go').click()")
    browser.until("!!document.querySelector('#facts .err')")
    assert "500" in browser.eval("document.querySelector('#facts .err').innerText")
    with edgemed.load(unet_bundle) as pipe:
        def broken(image):
            raise RuntimeError(f"cannot read {tmp_path}/work/x.png\nsecond line")

        pipe.predict = broken  # a bug deep inside, injected: the page must still get a line
        (tmp_path / "work").mkdir()
        client = make_app(pipe, tmp_path / "work").test_client()
        png = next(iter(sorted(samples_dir("busi").glob("*.png"))))
        answer = client.post("/predict", data={"file": (open(png, "rb"), png.name)})
    assert answer.status_code == 500
    message = answer.get_json()["error"]
    assert message.startswith(f"internal error analysing {png.name}: RuntimeError") and "\n" not in message


def _frame_box(browser: Browser) -> tuple[int, int, int, int]:
    """The shown frame's pixels on screen (inside the 1-pixel border): top, bottom, left, right."""
    r = json.loads(browser.eval("JSON.stringify(document.getElementById('overlay').getBoundingClientRect())"))
    top, left = int(round(r["top"])) + 1, int(round(r["left"])) + 1
    return top, int(round(r["top"] + r["height"])) - 1, left, int(round(r["left"] + r["width"])) - 1


def test_the_explanation_is_shown_over_the_frame_on_request(cam_page, cnn_cam_bundle):
    """Issue 22.3: a bundle converted with --explain cam gets a "show explanation" toggle and an opacity slider; the
    map drawn is the one predict --out writes (edgemed.io.saliency_overlay), over the plain frame, at the
    opacity set."""
    from edgemed.io.saliency_overlay import saliency_picture
    from edgemed.tasks import task_named

    browser, url = cam_page
    with edgemed.load(cnn_cam_bundle) as pipe:  # the real BUSI frame whose map has the most to show
        path = max(sorted(samples_dir("busi").glob("*.png")), key=lambda p: float(pipe.predict(p).saliency.mean()))
        frame = edgemed.read_image(path)
        result = pipe.predict(frame)
        plain = task_named(pipe.task).render(frame, result, pipe.labels).astype(int)
        heat = np.asarray(saliency_picture(frame, result.saliency)).astype(int)
    assert np.abs(heat - plain).mean() > 10  # the map changes the picture enough to be seen on screen
    browser.upload(url, path)
    note = browser.eval("document.getElementById('explain-note').innerText")
    assert "Explanation (CAM saliency map)" in note and "Not a finding" in note
    assert browser.eval("document.getElementById('show-explanation').checked") is False
    hidden = "getComputedStyle(document.getElementById('saliency')).display === 'none'"
    assert browser.eval(hidden)
    top, bottom, left, right = _frame_box(browser)
    assert (bottom - top, right - left) == plain.shape[:2]  # shown 1:1, so the screen can be compared pixel by pixel

    def shown() -> np.ndarray:
        return browser.screenshot()[top:bottom, left:right].astype(int)

    before = shown()
    assert np.abs(before - plain).mean() < 2  # off: the plain frame

    browser.eval("document.getElementById('show-explanation').click()")
    browser.until("(() => {const s = document.getElementById('saliency'); return !s.hidden && s.complete && "
                  "s.naturalWidth > 0 && getComputedStyle(s).display !== 'none' && s.offsetParent !== null})()")
    rect = json.loads(browser.eval("JSON.stringify(document.getElementById('saliency').getBoundingClientRect())"))
    over = json.loads(browser.eval("JSON.stringify(document.getElementById('overlay').getBoundingClientRect())"))
    assert rect == over  # the map lies exactly over the frame
    full = shown()
    assert np.abs(full - before).mean() > 10  # on: what is drawn differs from the plain frame
    assert np.abs(full - heat).mean() < 2  # and it is predict --out's picture (opacity 100 by default)

    browser.eval("(() => {const o = document.getElementById('opacity'); o.value = 50; "
                 "o.dispatchEvent(new Event('input', {bubbles: true}))})()")
    half = shown()
    assert np.abs(half - full).mean() > 4  # the slider changes what is drawn ...
    assert np.abs(half - (plain + heat) / 2).mean() < 2  # ... to the map at half opacity over the frame

    browser.eval("document.getElementById('show-explanation').click()")
    assert browser.eval(hidden)
    assert np.abs(shown() - plain).mean() < 2
