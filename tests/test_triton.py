"""edgemed serve on a real Triton (the binary in the nvidia-pytriton wheel), on loopback, bounded in time.

Triton's wheel pins numpy<2, so it lives in its own environment (``.venv-serve``, made by the
README's test command and by CI; or ``EDGEMED_SERVE_PYTHON``). The server is started from there;
these tests speak KServe v2 to it over HTTP from this environment, and over gRPC through
``tritonclient`` from that one, and compare every answer with in-process ``predict``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import edgemed
from edgemed.bundle import Bundle
from edgemed.datasets import ImageSet
from edgemed.samples import samples_dir

from .conftest import ROOT, free_ports

SERVE_PY = Path(os.environ.get("EDGEMED_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
pytestmark = pytest.mark.skipif(
    not SERVE_PY.is_file() or subprocess.run([str(SERVE_PY), "-c", "import pytriton, edgemed"],
                                             capture_output=True).returncode != 0,
    reason=f"no serving environment at {SERVE_PY} (python3 -m venv .venv-serve && .venv-serve/bin/pip install "
           "-e '.[serve]', as the README's test command does)")
TIMEOUT = 60


def _get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if body.startswith("{") else body
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def infer(base: str, model: str, arrays: dict[str, np.ndarray], timeout: float = TIMEOUT) -> tuple[int, dict]:
    """A KServe v2 HTTP/REST inference request with the tensors in JSON."""
    kinds = {np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16", np.dtype(np.float32): "FP32",
             np.dtype(np.int32): "INT32"}
    body = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": kinds[a.dtype],
                        "data": [None if np.isnan(v) else v for v in a.ravel().tolist()]
                        if a.dtype.kind == "f" else a.ravel().tolist()} for n, a in arrays.items()]}
    req = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def infer_binary(base: str, model: str, name: str, array: np.ndarray, datatype: str) -> tuple[int, dict]:
    """The same request with the tensor as raw bytes (KServe v2's binary data extension): how NaN and large
    frames travel (JSON has no NaN)."""
    header = json.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": datatype,
                                     "parameters": {"binary_data_size": array.nbytes}}]}).encode()
    req = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=header + array.tobytes(),
                                 headers={"Content-Type": "application/octet-stream",
                                          "Inference-Header-Content-Length": str(len(header))})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _frame(image: np.ndarray) -> dict[str, np.ndarray]:
    x = image if image.ndim == 3 else image[:, :, None]
    return {"IMAGE_UINT8" if x.dtype == np.uint8 else "IMAGE_FP32": x[None]}


@pytest.fixture(scope="module")
def server(cnn_bundle, unet_bundle, cnn_pair, rr_bundle):
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([str(SERVE_PY), "-m", "edgemed.cli", "serve", str(cnn_bundle), str(unet_bundle),
                             str(cnn_pair), str(rr_bundle),
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                             "--max-batch", "8", "--max-queue-delay-us", "20000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"edgemed serve exited: {proc.stdout.read()[-2000:]}")
            try:
                if _get(f"{base}/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("Triton was not ready within 120 s")
        yield {"http": base, "grpc": f"127.0.0.1:{grpc}", "metrics": f"http://127.0.0.1:{metrics}", "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_health_metadata_and_the_verdict_travel(server, cnn_bundle):
    assert _get(f"{server['http']}/v2/health/live")[0] == 200
    status, meta = _get(f"{server['http']}/v2/models/cnn_breastmnist")
    assert status == 200 and meta["platform"] == "python"
    status, config = _get(f"{server['http']}/v2/models/cnn_breastmnist/config")
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["verdict"] == "passed" and params["bundle_sha256"] == Bundle.open(cnn_bundle).manifest_sha256()
    status, text = _get(f"{server['metrics']}/metrics")
    assert status == 200 and "nv_inference_request_success" in text


def test_http_answers_equal_in_process_predict(server, cnn_bundle, unet_bundle):
    with edgemed.load(cnn_bundle) as pipe:
        for _, image in ImageSet.open(samples_dir("breastmnist")):
            status, out = infer(server["http"], "cnn_breastmnist", _frame(image))
            assert status == 200, out
            got = {o["name"]: o for o in out["outputs"]}
            local = pipe.predict(image)
            np.testing.assert_allclose(got["PROBABILITIES"]["data"], local.probabilities, atol=1e-6)
            assert got["LABEL"]["data"] == [local.label]
    with edgemed.load(unet_bundle) as pipe:
        for _, image in list(ImageSet.open(samples_dir("busi")))[:3]:
            status, out = infer(server["http"], "unet_busi", _frame(image))
            assert status == 200, out
            mask = np.array(out["outputs"][0]["data"], np.uint8).reshape(out["outputs"][0]["shape"])[0]
            np.testing.assert_array_equal(mask, pipe.predict(image).mask)


def test_grpc_answers_equal_in_process_predict(server, cnn_bundle, tmp_path):
    image = next(iter(ImageSet.open(samples_dir("breastmnist"))))[1]
    np.save(tmp_path / "f.npy", image[None, :, :, None])
    script = (
        "import sys, numpy as np, tritonclient.grpc as g\n"
        "c = g.InferenceServerClient(sys.argv[1])\n"
        "x = np.load(sys.argv[2]); i = g.InferInput('IMAGE_UINT8', list(x.shape), 'UINT8'); i.set_data_from_numpy(x)\n"
        "r = c.infer('cnn_breastmnist', [i]); print(r.as_numpy('PROBABILITIES').tolist()[0])\n")
    proc = subprocess.run([str(SERVE_PY), "-c", script, server["grpc"], str(tmp_path / "f.npy")],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    with edgemed.load(cnn_bundle) as pipe:
        np.testing.assert_allclose(json.loads(proc.stdout), pipe.predict(image).probabilities, atol=1e-6)


def test_an_ensemble_is_served_with_the_answers_of_its_in_process_predict(server, cnn_pair):
    """Issue 23: the ensemble folder is one Triton model; its config carries the ensemble's hash, the members'
    artifacts and the combination's verdict; concurrent HTTP answers (which the batcher groups) equal
    ``edgemed.load(ENSEMBLE).predict``; a preprocessed TENSOR, which no ensemble can take, is a 400 and the server
    goes on; ``predict --server`` reads the ensemble like a bundle."""
    from edgemed.hashing import sha256_file
    from edgemed.serve.triton_client import RemotePipeline

    base = server["http"]
    status, config = _get(f"{base}/v2/models/cnn_pair/config")
    assert status == 200, config
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["ensemble_sha256"] == sha256_file(cnn_pair / "ensemble.json") and params["verdict"] == "passed"
    assert len(params["artifact"].split(",")) == 2 and params["task"] == "classification"
    assert [i["name"] for i in config["input"]] == ["IMAGE_UINT8", "IMAGE_UINT16", "IMAGE_FP32"]
    frames = [image for _, image in ImageSet.open(samples_dir("breastmnist"))]
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda f: infer(base, "cnn_pair", _frame(f)), frames))
    remote = RemotePipeline(base, "cnn_pair")
    assert remote.reason.startswith("ensemble ") and "combination verdict passed" in remote.reason
    with edgemed.load(cnn_pair) as ens:
        for frame, (status, out) in zip(frames, answers):
            assert status == 200, out
            got = {o["name"]: o for o in out["outputs"]}
            local = ens.predict(frame)
            np.testing.assert_allclose(got["PROBABILITIES"]["data"], local.probabilities, atol=1e-6)
            assert got["LABEL"]["data"] == [local.label]
        np.testing.assert_allclose(remote.predict(frames[0]).probabilities, ens.predict(frames[0]).probabilities,
                                   atol=1e-6)
    status, out = infer(base, "cnn_pair", {"TENSOR": np.zeros((1, 1, 28, 28), np.float32)})
    assert status == 400 and "TENSOR" in out["error"], out
    assert infer(base, "cnn_pair", _frame(frames[0]))[0] == 200


def test_dynamic_batching_really_batches_frames_of_different_sizes(server):
    rng = np.random.default_rng(0)
    frames = [(rng.random((int(rng.integers(20, 90)), int(rng.integers(20, 90)), 1)) * 255).astype(np.uint8)
              for _ in range(48)]
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda f: infer(server["http"], "cnn_breastmnist", {"IMAGE_UINT8": f[None]}), frames))
    assert all(status == 200 for status, _ in results)
    status, stats = _get(f"{server['http']}/v2/models/cnn_breastmnist/stats")
    sizes = [int(b["batch_size"]) for m in stats["model_stats"] for b in m["batch_stats"]]
    assert max(sizes) > 1, sizes  # Triton's own statistics: requests were executed together


def test_bad_requests_get_v2_errors_and_the_server_keeps_serving(server):
    base = server["http"]
    ok = {"IMAGE_UINT8": np.zeros((1, 28, 28, 1), np.uint8) + 100}
    status, out = infer(base, "cnn_breastmnist", {"IMAGE_UINT8": np.zeros((1, 28, 28, 1), np.int32)})
    assert status == 400 and "error" in out  # wrong dtype for the input: Triton's own check
    status, out = infer(base, "cnn_breastmnist", {"IMAGE_UINT8": np.zeros((28, 28), np.uint8)})
    assert status == 400 and "error" in out  # wrong rank
    nan = np.full((1, 28, 28, 1), np.nan, np.float32)
    status, out = infer_binary(base, "cnn_breastmnist", "IMAGE_FP32", nan, "FP32")
    assert status == 400 and "NaN" in out["error"]
    huge = np.zeros((1, 8001, 8001, 1), np.uint8)  # 64 M pixels: beyond edgemed's frame limit (or Triton's size cap)
    status, out = infer_binary(base, "cnn_breastmnist", "IMAGE_UINT8", huge, "UINT8")
    assert status == 400 and ("pixel limit" in out["error"] or "exceeds" in out["error"]), out
    status, out = infer(base, "cnn_breastmnist", {"IMAGE_UINT8": np.zeros((1, 28, 28, 5), np.uint8)})
    assert status == 400 and "shape" in out["error"]
    status, out = infer(base, "no_such_model", ok)
    assert status in (400, 404) and "error" in out
    status, out = infer(base, "cnn_breastmnist", ok)
    assert status == 200


def test_plain_json_clients_are_answered_and_two_inputs_refused(server, cnn_bundle):
    """Issue 20.8, with a client that is not tritonclient: KServe v2 JSON as curl (or any language) sends it, over
    a bare socket. One frame is answered like in-process predict; a request carrying two image inputs is a 400
    naming both (before: answered for one of them, silently)."""
    import http.client

    image = next(iter(ImageSet.open(samples_dir("breastmnist"))))[1]
    frame = image[None, :, :, None]

    def post(inputs: list[dict]) -> tuple[int, dict]:
        host, port = server["http"].removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
        try:
            conn.request("POST", "/v2/models/cnn_breastmnist/infer", body=json.dumps({"inputs": inputs}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            conn.close()

    as_uint8 = {"name": "IMAGE_UINT8", "shape": list(frame.shape), "datatype": "UINT8", "data": frame.ravel().tolist()}
    status, out = post([as_uint8])
    assert status == 200, out
    got = {o["name"]: o for o in out["outputs"]}
    with edgemed.load(cnn_bundle) as pipe:
        local = pipe.predict(image)
    np.testing.assert_allclose(got["PROBABILITIES"]["data"], local.probabilities, atol=1e-6)
    assert got["LABEL"]["data"] == [local.label]
    as_fp32 = {"name": "IMAGE_FP32", "shape": list(frame.shape), "datatype": "FP32",
               "data": frame.astype(np.float32).ravel().tolist()}
    status, out = post([as_uint8, as_fp32])
    assert status == 400 and "2 inputs (IMAGE_UINT8, IMAGE_FP32)" in out["error"], out
    assert post([as_uint8])[0] == 200  # and the server goes on


def test_serve_refuses_numpy_2_beside_the_triton_wheel(cnn_bundle, tmp_path):
    """Issue 20.8 (corrected): with numpy 2 importable ahead of the wheel's numpy 1, Triton started, said ready and
    answered every request with empty tensors. serve now refuses in one line, before starting anything."""
    import importlib.util

    spec = importlib.util.find_spec("numpy")  # this environment's numpy (2.x: the main venv has no numpy pin)
    if not np.__version__.startswith("2"):
        pytest.skip("this environment has no numpy 2 to put in front of the serving environment")
    site = Path(spec.origin).parent.parent
    shadow = tmp_path / "numpy2"
    shadow.mkdir()
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (shadow / name).symlink_to(site / name)
    probe = subprocess.run([str(SERVE_PY), "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(shadow)}, timeout=60)
    if not probe.stdout.startswith("2"):  # the two environments use different Pythons: numpy 2 cannot load there
        pytest.skip(f"this numpy 2 does not import in the serving environment ({probe.stderr.strip()[-200:]})")
    http, grpc, metrics = free_ports(3)
    t0 = time.monotonic()
    proc = subprocess.run([str(SERVE_PY), "-m", "edgemed.cli", "serve", str(cnn_bundle), "--http-port", str(http),
                           "--grpc-port", str(grpc), "--metrics-port", str(metrics)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(shadow)}, timeout=120)
    assert proc.returncode == 2 and time.monotonic() - t0 < 60, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "numpy 2." in lines[0] and "needs numpy<2" in lines[0] and ".venv-serve" in lines[0]


def test_a_killed_instance_is_survived_never_a_hang(server):
    stubs = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).count("triton_python_backend_stub")
             and "cnn_breastmnist" in _cmdline(p)]
    if not stubs:
        pytest.skip("the Python backend's stub process is not visible here")
    frame = {"IMAGE_UINT8": np.zeros((1, 28, 28, 1), np.uint8) + 100}
    with cf.ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(infer, server["http"], "cnn_breastmnist", frame, 90) for _ in range(40)]
        os.kill(int(stubs[0].name), signal.SIGKILL)
        statuses = [f.result(timeout=120)[0] for f in pending]  # every request answers: success or an error
    assert set(statuses) <= {200, 400, 500, 503}
    deadline, recovered = time.monotonic() + 90, False
    while time.monotonic() < deadline and not recovered:
        recovered = infer(server["http"], "cnn_breastmnist", frame, 30)[0] == 200
        time.sleep(1)
    assert recovered  # edgemed serve saw the instance gone and had Triton reload the model


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_exported_repository_parses_with_tritons_model_config_protobuf(cnn_bundle, unet_bundle, tmp_path):
    out = tmp_path / "repo"
    proc = subprocess.run([str(SERVE_PY), "-m", "edgemed.cli", "export", "triton", str(cnn_bundle), str(unet_bundle),
                           "-o", str(out)], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    script = ("import sys; from google.protobuf import text_format\n"
              "from tritonclient.grpc import model_config_pb2 as m\n"
              "for p in sys.argv[1:]:\n"
              "    c = text_format.Parse(open(p).read(), m.ModelConfig())\n"
              "    print(c.name, c.backend, c.max_batch_size, len(c.input), len(c.output),\n"
              "          c.dynamic_batching.max_queue_delay_microseconds)\n")
    configs = sorted(str(p) for p in out.glob("*/config.pbtxt"))
    proc = subprocess.run([str(SERVE_PY), "-c", script, *configs], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "cnn_breastmnist python 8 4 2 0"  # no batcher delay by default (cli.serve)
    assert (out / "inferenceservice.yaml").read_text().count("protocolVersion: v2") == 1
    assert (out / "cnn_breastmnist" / "1" / "bundle" / "edgemed.json").is_file()


def test_predict_offloads_to_the_server_with_the_same_output(server, cnn_bundle, unet_bundle):
    """`edgemed predict --server URL MODEL frames`: same lines as running the bundle here."""
    import sys

    for bundle, frames in ((cnn_bundle, samples_dir("breastmnist")), (unet_bundle, samples_dir("busi"))):
        name = Bundle.open(bundle).name
        here = subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", str(bundle), str(frames), "--json"],
                              capture_output=True, text=True, timeout=300)
        there = subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", "--server", server["http"], name,
                                str(frames), "--json"], capture_output=True, text=True, timeout=300)
        assert here.returncode == 0 and there.returncode == 0, there.stderr
        strip = [{k: v for k, v in json.loads(line).items() if k != "timings_ms"} for line in here.stdout.splitlines()]
        remote = [{k: v for k, v in json.loads(line).items() if k != "timings_ms"}
                  for line in there.stdout.splitlines()]
        assert remote == strip


def test_a_beat_model_with_rr_intervals_is_served_with_the_answers_of_its_in_process_predict(server, rr_bundle):
    """Issue 21: a two-input model on Triton, one tensor per input. Real DS2 beats (patients the model never saw)
    with their RR intervals, sent as predict takes them (their rate, mV, features by name), eight requests at a time
    (Triton's dynamic batcher may group them): each answer equals in-process predict's; a request without the
    intervals, or a beat without its rate, is refused naming the missing input; the CLI says a recording's beats are
    found in process."""
    import sys

    from edgemed.errors import InputError
    from edgemed.samples import ecg_beats
    from edgemed.serve.triton_client import RemotePipeline
    from edgemed.signal_sets import SignalSet

    beats = [b for _, b in SignalSet.open(ecg_beats()).subset(200) if np.isfinite(list(b.features.values())).all()]
    beats = beats[:40]
    remote = RemotePipeline(server["http"], "ecg_rr")
    assert remote.input_kind == "signal" and "verdict passed" in remote.reason

    def served(beat):
        return remote.predict(beat.samples, fs=beat.fs, units="mV", leads=beat.leads, features=dict(beat.features))

    with edgemed.load(rr_bundle) as pipe, cf.ThreadPoolExecutor(8) as pool:
        local = [pipe.predict(b) for b in beats]
        there = list(pool.map(served, beats))
    assert {r.label for r in local} >= {"N", "V"}  # the subset holds more than one class
    for a, b in zip(local, there):
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)

    beat = beats[0]
    x = beat.samples.astype(np.float32)[None]
    status, body = infer(server["http"], "ecg_rr", {"SIGNAL_FP32": x, "FS": np.array([[beat.fs]], np.float32)})
    assert status == 400 and "input 'rr' must be (1, 4) float32" in body["error"], body
    rr = np.array([[beat.features[k] for k in ("rr_pre", "rr_post", "rr_local", "rr_average")]], np.float32)
    status, body = infer(server["http"], "ecg_rr", {"SIGNAL_FP32": x, "rr": rr})
    assert status == 400 and "needs its sampling rate: FS" in body["error"], body
    status, body = infer(server["http"], "ecg_rr", {"SIGNAL_FP32": x, "FS": np.array([[beat.fs]], np.float32),
                                                     "rr": rr})
    assert status == 200 and {o["name"] for o in body["outputs"]} == {"PROBABILITIES", "LABEL"}
    with pytest.raises(InputError, match="reads rr_pre"):
        remote.predict(beat.samples, fs=beat.fs, units="mV", leads=beat.leads)
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "predict", "--server", server["http"], "ecg_rr",
                           str(ROOT / "tests")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "predict --server reads images" in proc.stderr and "Traceback" not in proc.stderr
