"""The upload page (``edgemed view``) on hostile requests: uploads of damaged images and DICOM files under hostile
file names, multipart bodies that are cut short or malformed, headers that lie, methods and paths it does not
serve, and bytes that are not HTTP. One server per module (a subprocess on loopback); it must answer each request
(an answer or a 4xx JSON error of one line, never a 500, never a hang), keep answering a good upload correctly,
and never keep an upload on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import edgemed

from ..conftest import DICOM, free_ports
from . import net
from . import strategies as fs
from .harness import count, fuzz_settings

pytestmark = [pytest.mark.fuzz, pytest.mark.skipif(not __import__("importlib").util.find_spec("flask"),
                                                   reason="flask not installed (pip install 'edgemed[view]')")]
NAMES = ["x.png", "x.dcm", "x.npy", "..", ".", "", "../../escape.png", "a/b/c.png", "C:\\evil.png", "x\x00.png",
         "x\n.png", "é.png", "x" * 300 + ".png", "nul\x00", "~/.ssh/id.png", "con.png", "x.PNG"]


@pytest.fixture(scope="module")
def page(cnn_bundle, tmp_path_factory):
    port = free_ports(1)[0]
    tmp = tmp_path_factory.mktemp("view-tmp")
    log = tmp / "view.log"  # a file, not a pipe: a pipe nobody reads fills up with the request log and blocks it
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edgemed.cli", "view", str(cnn_bundle), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "TMPDIR": str(tmp)})
    try:
        if not net.wait_port(port, 60, lambda: proc.poll() is None):
            pytest.fail(f"edgemed view did not start: {log.read_text()[-2000:]}")
        good = (np.arange(28 * 28) % 251).astype(np.uint8).reshape(28, 28)
        Image.fromarray(good).save(tmp / "good.png")
        with edgemed.load(cnn_bundle) as pipe:
            want = pipe.predict(good)
        yield {"port": port, "proc": proc, "tmp": tmp, "good": (tmp / "good.png").read_bytes(), "want": want}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def seeds(shared_data) -> fs.Blobs:
    import io

    good = (np.arange(40 * 48) % 251).astype(np.uint8).reshape(40, 48)
    buf = io.BytesIO()
    Image.fromarray(good).save(buf, format="PNG")
    return fs.Blobs({"png": buf.getvalue(), "ct": (DICOM / "CT_small.dcm").read_bytes(),
                     "mr": (DICOM / "MR_small.dcm").read_bytes()})


def _good_upload(page) -> None:
    """After hostile requests the page still answers a good upload, with the label predict gives."""
    body, ctype = net.multipart([("file", "good.png", page["good"])])
    status, answer = net.raw_http(page["port"], net.request("POST", "/predict", body, {"Content-Type": ctype}))
    assert status == 200, (status, answer[:300])
    result = json.loads(answer)["result"]
    assert result["label"] == page["want"].label
    assert page["proc"].poll() is None, "the page's server died"


def _no_upload_left(page) -> None:
    """Every upload is deleted when its request ends; only complete DICOM results may stay (for download)."""
    import pydicom

    for folder in page["tmp"].glob("edgemed-view-*/*"):
        for f in folder.rglob("*"):
            if f.is_file():
                assert f.name.startswith("result.") and f.suffix == ".dcm", f"left on disk: {f}"
                pydicom.dcmread(f)  # whole, readable


def _check(page, status, body, entry: str) -> None:
    assert status is not None, f"{entry}: no HTTP answer"
    assert status != 500 and status < 600, (status, body[:500])
    if status == 400 and body.startswith(b"{"):
        message = json.loads(body)["error"]
        assert message and len(message.splitlines()) == 1, message
    if status == 200 and body.startswith(b"{"):
        answer = json.loads(body)
        if "result" in answer:
            probs = list(answer["result"]["probabilities"].values())
            assert np.isfinite(probs).all() and abs(sum(probs) - 1) < 1e-3, probs
    count(entry, "result" if status == 200 else "refused")


@st.composite
def uploads(draw, seeds):
    kind = draw(st.sampled_from(["png", "ct", "mr", "random", "npy"]))
    if kind == "random":
        content = draw(st.binary(max_size=512))
    elif kind == "npy":
        content = draw(fs.npy_bytes())
    else:
        content = fs.mutate(seeds[kind], draw, max_ops=3) if draw(st.integers(0, 3)) else seeds[kind]
    name = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=20)))
    field = draw(st.sampled_from(["file", "file", "file", "upload", ""]))
    return [(field, name, content)]


@fuzz_settings(120, deadline_s=30)
@given(data=st.data())
def test_uploads(page, seeds, data):
    fields = data.draw(uploads(seeds))
    body, ctype = net.multipart(fields)
    how = data.draw(st.sampled_from(["whole", "whole", "whole", "cut", "lie-short", "no-type", "bad-boundary"]))
    headers = {"Content-Type": ctype}
    length = None
    if how == "cut":
        body = body[:data.draw(st.integers(0, max(0, len(body) - 1)))]
    elif how == "lie-short":
        length = data.draw(st.integers(0, max(0, len(body) - 1)))
    elif how == "no-type":
        headers = {}
    elif how == "bad-boundary":
        headers = {"Content-Type": "multipart/form-data; boundary=" + data.draw(st.text(max_size=8))}
    status, answer = net.raw_http(page["port"], net.request("POST", "/predict", body, headers, length))
    _check(page, status, answer, "view (uploads)")
    _no_upload_left(page)
    if data.draw(st.integers(0, 9)) == 0:
        _good_upload(page)


@fuzz_settings(300, deadline_s=30)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "TRACE", "BREW", ""]),
       path=st.one_of(st.sampled_from(["/", "/predict", "/download/abc/x.dcm", "/download/../../etc/passwd",
                                       "/download/%2e%2e/x", "/download/" + "a" * 5000 + "/x", "//", "/static/x",
                                       "*", "/download/0123456789abcdef/..", "/predict?file=x"]),
                      st.text(max_size=30).map(lambda t: "/" + t)),
       garbage=st.one_of(st.just(b""), st.binary(max_size=256)))
def test_requests_and_garbage(page, method, path, garbage):
    data = net.request(method, path) if not garbage else garbage
    status, answer = net.raw_http(page["port"], data)
    well_formed = method and all(33 <= ord(c) < 127 for c in path)
    if status is None and (garbage or not well_formed):  # not HTTP (an HTTP/0.9-style line): closing is an answer
        count("view (requests, garbage)", "refused")
    else:
        _check(page, status, answer, "view (requests, garbage)")
        assert not (method == "GET" and path.startswith("/download/") and status == 200), \
            "a download outside a job was served"


def test_still_serving_after_the_fuzzing(page):
    _good_upload(page)
    _no_upload_left(page)
