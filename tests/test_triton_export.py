"""``export triton``: model repositories a stock Triton image runs (issue 31).

A stock Triton image has numpy and nothing else in its Python, and the native ONNX Runtime and OpenVINO
backends, which the Triton in the nvidia-pytriton wheel here lacks. So:

- the numpy steps are held to edgemed itself: Pillow's resize bit for bit, and the pre/post steps run in an
  interpreter that has only numpy and the standard library, around the exported engine file run by its own
  runtime, give ``predict``'s answer on real frames;
- every written config parses with Triton's own model-config protobuf, and the ensemble's tensors are wired
  to names the step models and the engine file really have;
- the whole ensemble runs on the real Triton here, its Python steps in a stub where ``import edgemed`` fails,
  with only the engine step swapped for a Python model running the same ``model.onnx`` (test-only code:
  the native ONNX Runtime backend itself stays unverified here);
- the Python-backend export with ``--pack-env`` runs on that Triton from a Python without edgemed: Triton
  activates the model's own environment (``EXECUTION_ENV_PATH``) and the answers are ``predict``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgemed
from edgemed.datasets import ImageSet
from edgemed.samples import samples_dir
from edgemed.serve.triton_repository import export_repository

from .conftest import ROOT, SHARED, convert_ecg_fp32, convert_shipped, free_ports
from .test_layers import _installed_layout

SERVE_PY = Path(os.environ.get("EDGEMED_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
TIMEOUT = 60


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The shipped classifier, U-Net and detector as FP32 ONNX Runtime and OpenVINO artifacts (about 20 s)."""
    root = tmp_path_factory.mktemp("native")
    return {name: convert_shipped(name, root / name, targets=("onnx", "openvino"), precisions=("fp32",))
            for name in ("cnn_breastmnist", "unet_busi", "det_busi")}


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def repo(request, bundles, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(f"repo-{request.param}") / "repo"
    names = export_repository(list(bundles.values()), out, backend=request.param)
    assert names == list(bundles)
    return request.param, out


def test_numpy_resize_is_pillows_bit_for_bit(busi):
    """The steps' resize against the installed Pillow on real BUSI frames: 8-bit grey and RGB exactly (fixed point,
    and Pillow 13's pass order), float ('F' images) to float32 rounding, every interpolation, up and down."""
    steps = _steps_module_from_source()
    major = int(Image.__version__.split(".")[0])
    rng = np.random.default_rng(7)
    images = busi["images"]
    methods = [("nearest", 0), ("bilinear", 2), ("bicubic", 3), ("area", 4), ("lanczos", 1)]
    for t in range(150):
        h0, w0 = (int(v) for v in rng.integers(3, 257, 2))
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        frame = images[t][:h0, :w0].copy()
        if t % 3 == 0:
            frame = np.stack([frame, frame[::-1], 255 - frame], axis=-1)
        interpolation, pil = methods[t % 5]
        ref = np.asarray(Image.fromarray(frame).resize((w, h), pil))
        assert np.array_equal(steps.resize(frame, (h, w), interpolation, major), ref), (frame.shape, h, w, pil)
        if frame.ndim == 2:
            grey = frame.astype(np.float32) * np.float32(0.37) - 3
            ref = np.asarray(Image.fromarray(grey, "F").resize((w, h), pil))
            np.testing.assert_allclose(steps.resize(grey, (h, w), interpolation, major), ref, rtol=1e-6, atol=1e-5)


def _steps_module_from_source():
    from edgemed.serve import triton_steps

    return triton_steps


def _numpy_only(script: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in an isolated interpreter (-I -S: no site-packages, no user paths) that sees numpy alone, as
    a stock Triton image's Python does."""
    shadow = tmp / "numpy_only"
    if not shadow.exists():
        shadow.mkdir()
        site = Path(np.__file__).parent.parent
        for name in ("numpy", "numpy.libs"):
            if (site / name).exists():
                (shadow / name).symlink_to(site / name)
    code = f"import sys; sys.path.insert(0, {str(shadow)!r})\n" + script
    return subprocess.run([sys.executable, "-I", "-S", "-c", code, *args], capture_output=True, text=True,
                          timeout=TIMEOUT)


PRE = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import edgemed_steps as steps
assert "edgemed" not in sys.modules and "PIL" not in sys.modules
config = steps.load_config(open(sys.argv[1] + "/steps.json").read())
frames = np.load(sys.argv[2], allow_pickle=True)
out = {}
for key in frames.files:
    try:
        for k, v in steps.pre_step(frames[key], config).items():
            out[f"{key}/{k}"] = v
    except steps.StepError as exc:
        out[f"{key}/error"] = np.array(str(exc))
np.savez(sys.argv[3], **out)
"""

POST = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import edgemed_steps as steps
config = steps.load_config(open(sys.argv[1] + "/steps.json").read())
given = np.load(sys.argv[2])
keys = sorted({k.split("/")[0] for k in given.files})
out = {}
for key in keys:
    inputs = {k.split("/")[1]: given[k] for k in given.files if k.startswith(key + "/")}
    for k, v in steps.post_step(inputs, config).items():
        out[f"{key}/{k}"] = v
np.savez(sys.argv[3], **{k: (v.astype(str) if v.dtype == object else v) for k, v in out.items()})
"""


def _frames(kind: str) -> list[np.ndarray]:
    frames = [f for _, f in ImageSet.open(samples_dir(kind))][:6]
    rgb = np.stack([frames[0]] * 3, axis=-1) if frames[0].ndim == 2 else frames[0]
    return frames + [rgb, frames[1][: frames[1].shape[0] * 2 // 3, : frames[1].shape[1] // 2]]


def test_numpy_steps_around_the_exported_engine_answer_as_predict(repo, bundles, tmp_path):
    """Real frames (BreastMNIST, BUSI; grey, RGB, a cropped odd size) through the pre step and the post step in a
    numpy-only interpreter, and the exported engine file on its own runtime in between: predict's answers."""
    from edgemed.runtimes import create_engine

    backend, out = repo
    for name, bundle in bundles.items():
        frames = _frames("breastmnist" if name.startswith("cnn") else "busi")
        np.savez(tmp_path / "frames.npz", **{str(i): (f if f.ndim == 3 else f[:, :, None])[None]
                                              for i, f in enumerate(frames)})
        pre = _numpy_only(PRE, str(out / f"{name}_pre" / "1"), str(tmp_path / "frames.npz"), str(tmp_path / "pre.npz"),
                          tmp=tmp_path)
        assert pre.returncode == 0, pre.stderr
        prepared = np.load(tmp_path / "pre.npz")
        config = json.loads((out / f"{name}_post" / "1" / "steps.json").read_text())
        engine_file = next(p for p in (out / f"{name}_engine" / "1").iterdir() if p.suffix in (".onnx", ".xml"))
        engine = create_engine(backend, engine_file, threads=1)
        raw = {}
        for i in range(len(frames)):
            outs = engine.infer({engine.inputs[0].name: prepared[f"{i}/TENSOR"]})
            raw[f"{i}/GEOMETRY"] = prepared[f"{i}/GEOMETRY"]
            raw.update({f"{i}/RAW_{j}": outs[n] for j, n in enumerate(config["outputs"])})
        engine.close()
        np.savez(tmp_path / "raw.npz", **raw)
        post = _numpy_only(POST, str(out / f"{name}_post" / "1"), str(tmp_path / "raw.npz"),
                           str(tmp_path / "post.npz"), tmp=tmp_path)
        assert post.returncode == 0, post.stderr
        answers = np.load(tmp_path / "post.npz")
        with edgemed.load(bundle, backend=backend) as pipe:
            for i, frame in enumerate(frames):
                r = pipe.predict(frame)
                np.testing.assert_allclose(prepared[f"{i}/TENSOR"], pipe.prepare(frame).tensor, atol=1e-6)
                if name.startswith("cnn"):
                    assert answers[f"{i}/LABEL"][0][0] == r.label
                    np.testing.assert_allclose(answers[f"{i}/PROBABILITIES"][0], r.probabilities, atol=1e-5)
                elif name.startswith("unet"):
                    assert np.array_equal(answers[f"{i}/MASK"][0], r.mask), (name, i)
                else:
                    np.testing.assert_allclose(answers[f"{i}/BOXES"][0], r.boxes, atol=1e-3)
                    np.testing.assert_allclose(answers[f"{i}/SCORES"][0], r.scores, atol=1e-5)
                    assert np.array_equal(answers[f"{i}/CLASSES"][0], r.classes)
    assert any(len(answers[f"{i}/BOXES"][0]) for i in range(len(frames)))  # the detector found lesions


def test_the_pre_step_refuses_what_predict_refuses(repo, bundles, tmp_path):
    """NaN, a 16-bit frame, a frame already scaled to [0, 1], a wrong rank: the step refuses, in one line with its fix,
    exactly the frames predict refuses (a spec that rescales each frame itself takes any range, in both)."""
    from edgemed.errors import EdgemedError

    _, out = repo
    bad = {"nan": np.full((1, 64, 64, 1), np.nan, np.float32),
           "uint16": np.full((1, 64, 64, 1), 40000, np.uint16),
           "scaled": np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(1, 64, 64, 1),
           "rank": np.zeros((1, 2, 64, 64, 1), np.uint8)}
    np.savez(tmp_path / "bad.npz", **bad)
    refused = 0
    for name in ("cnn_breastmnist", "unet_busi"):
        pre = _numpy_only(PRE, str(out / f"{name}_pre" / "1"), str(tmp_path / "bad.npz"), str(tmp_path / "out.npz"),
                          tmp=tmp_path)
        assert pre.returncode == 0, pre.stderr
        result = np.load(tmp_path / "out.npz")
        with edgemed.load(bundles[name]) as pipe:
            for key, frames in bad.items():
                try:
                    pipe.predict(frames[0, ..., 0] if frames.ndim == 4 else frames[0])
                    predict_refuses = False
                except EdgemedError:
                    predict_refuses = True
                step_refuses = f"{key}/error" in result.files
                assert step_refuses == predict_refuses, (name, key)
                if step_refuses:
                    refused += 1
                    message = str(result[f"{key}/error"])
                    assert "\n" not in message and "fix:" in message, message
    assert refused >= 5  # NaN and rank for both, 16-bit for the 1/255-scaling classifier at least


def test_configs_parse_with_tritons_protobuf_and_the_ensemble_is_wired(repo, bundles):
    """Every config.pbtxt through tritonclient's ModelConfig; each ensemble step maps names its model declares, every
    tensor a step reads was made before it, the engine config names the engine file's own inputs and outputs."""
    from edgemed.runtimes import create_engine

    backend, out = repo
    script = ("import json, sys; from google.protobuf import text_format, json_format\n"
              "from tritonclient.grpc import model_config_pb2 as m\n"
              "print(json.dumps({p: json_format.MessageToDict(text_format.Parse(open(p).read(), m.ModelConfig()))"
              " for p in sys.argv[1:]}))\n")
    configs = sorted(str(p) for p in out.glob("*/config.pbtxt"))
    proc = subprocess.run([str(SERVE_PY), "-c", script, *configs], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    parsed = {Path(p).parent.name: c for p, c in json.loads(proc.stdout).items()}
    assert len(parsed) == 4 * len(bundles)
    for name in bundles:
        ensemble = parsed[name]
        assert ensemble["platform"] == "ensemble"
        params = {k: v["stringValue"] for k, v in ensemble["parameters"].items()}
        assert params["backend"] == backend and params["verdict"] == "passed"
        available = {i["name"] for i in ensemble["input"]}
        for step in ensemble["ensembleScheduling"]["step"]:
            model = parsed[step["modelName"]]
            assert set(step["inputMap"]) == {i["name"] for i in model["input"]}
            assert set(step["outputMap"]) <= {o["name"] for o in model["output"]}
            assert set(step["inputMap"].values()) <= available
            available |= set(step["outputMap"].values())
        assert {o["name"] for o in ensemble["output"]} <= available
        engine_config = parsed[f"{name}_engine"]
        assert engine_config.get("platform") == "onnxruntime_onnx" or engine_config.get("backend") == "openvino"
        engine_file = next(p for p in (out / f"{name}_engine" / "1").iterdir() if p.suffix in (".onnx", ".xml"))
        engine = create_engine(backend, engine_file, threads=1)
        assert [i["name"] for i in engine_config["input"]] == [t.name for t in engine.inputs]
        assert [o["name"] for o in engine_config["output"]] == [t.name for t in engine.outputs]
        engine.close()
        batched = int(ensemble.get("maxBatchSize", 0)) > 0
        assert batched == (not name.startswith("det"))  # a detector answers one frame per request
    manifest = (out / "inferenceservice.yaml").read_text()
    assert "stock Triton image" in manifest and "pip install edgemed" not in manifest


def test_an_unportable_spec_is_refused_in_one_line(tmp_path):
    """CLAHE needs scikit-image, which a stock Triton image lacks: the export says so and names the Python backend."""
    bundle = convert_shipped("cnn_breastmnist", tmp_path / "clahe", targets=("onnx",), precisions=("fp32",),
                             preprocess=({"op": "to_gray"}, {"op": "clahe"}, {"op": "resize", "size": [28, 28]}),
                             calib=SHARED / "breastmnist.npz", calib_key="train_images")
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "export", "triton", str(bundle), "-o",
                           str(tmp_path / "repo"), "--backend", "onnxruntime"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "clahe" in lines[0] and "--backend python" in lines[0]
    assert not (tmp_path / "repo").exists()


SWAPPED_ENGINE = '''"""TEST ONLY: Triton's native ONNX Runtime backend is not in this Triton, so the engine step runs
the same model.onnx through onnxruntime in the Python backend. It also proves the stub cannot import edgemed."""
import json
from pathlib import Path

import onnxruntime
import triton_python_backend_utils as pb


class TritonPythonModel:
    def initialize(self, args):
        try:
            import edgemed  # noqa: F401
        except ImportError:
            pass
        else:
            raise RuntimeError("edgemed imports in this stub: the test would not prove anything")
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.session = onnxruntime.InferenceSession(str(Path(__file__).parent / "model.onnx"))

    def execute(self, requests):
        answers = []
        for request in requests:
            feed = {n: pb.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            values = self.session.run(self.outputs, feed)
            answers.append(pb.InferenceResponse([pb.Tensor(n, v) for n, v in zip(self.outputs, values)]))
        return answers
'''

LAUNCH = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])  # edgemed for this launcher only
from edgemed.serve.triton_server import start
server = start(Path(sys.argv[1]), http_port=int(sys.argv[3]), grpc_port=int(sys.argv[4]),
               metrics_port=int(sys.argv[5]), ready_timeout=120)
print("READY", flush=True)
sys.stdin.read()
server.stop()
"""


def _infer(base: str, model: str, frame: np.ndarray, name: str = "IMAGE") -> dict:
    header = json.dumps({"inputs": [{"name": name, "shape": list(frame.shape), "datatype": "UINT8",
                                     "parameters": {"binary_data_size": frame.nbytes}}],
                         "outputs": [{"name": n, "parameters": {"binary_data": False}}
                                     for n in ("MASK",) if model.startswith("unet")]}).encode()
    request = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=header + frame.tobytes(),
                                     headers={"Content-Type": "application/octet-stream",
                                              "Inference-Header-Content-Length": str(len(header))})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as r:
        return json.loads(r.read())


def _stock_python(tmp_path: Path) -> Path:
    """A Python like a stock image's: the serving environment's packages (numpy, Triton, onnxruntime for the swapped
    engine) added as a plain path, so its editable edgemed (a .pth finder) is not importable. Triton's stub ignores
    PYTHONPATH and takes the site-packages of the python on PATH, i.e. this one's."""
    stock = tmp_path / "stock"
    subprocess.run([str(SERVE_PY), "-m", "venv", "--without-pip", str(stock)], check=True, timeout=TIMEOUT)
    serve_site = subprocess.run([str(SERVE_PY), "-c", "import numpy, pathlib; print(pathlib.Path(numpy.__file__)"
                                 ".parent.parent)"], capture_output=True, text=True, timeout=TIMEOUT).stdout.strip()
    (next((stock / "lib").glob("python3*/site-packages")) / "serve.pth").write_text(serve_site + "\n")
    probe = subprocess.run([str(stock / "bin" / "python"), "-c", "import edgemed"], capture_output=True, timeout=60)
    assert probe.returncode != 0  # no edgemed in the stock-like Python
    return stock / "bin" / "python"


@contextlib.contextmanager
def _triton_from(python: Path, repo: Path, tmp_path: Path):
    """Triton on ``repo``, started by ``python`` (edgemed laid out as installed for the launcher only): its URL."""
    launcher_path = tmp_path / "launcher"
    if not launcher_path.exists():
        _installed_layout(launcher_path)
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([str(python), "-c", LAUNCH, str(repo), str(launcher_path), str(http), str(grpc),
                             str(metrics)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.stderr.read()[-3000:]
        yield f"http://127.0.0.1:{http}"
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)


def _answers_as_predict(base: str, cnn_bundle: Path, unet_bundle: Path | None, names: dict[str, str],
                        image: str = "IMAGE") -> None:
    with edgemed.load(cnn_bundle, backend="onnxruntime") as cnn:
        for frame in _frames("breastmnist")[:4]:
            answer = {o["name"]: o for o in _infer(base, names["cnn"], frame[None, :, :, None]
                                                   if frame.ndim == 2 else frame[None], image)["outputs"]}
            r = cnn.predict(frame)
            assert answer["LABEL"]["data"] == [r.label]
            np.testing.assert_allclose(answer["PROBABILITIES"]["data"], r.probabilities, atol=1e-5)
    if unet_bundle is None:
        return
    with edgemed.load(unet_bundle, backend="onnxruntime") as unet:
        for frame in _frames("busi")[:3]:
            answer = _infer(base, names["unet"], (frame if frame.ndim == 3 else frame[:, :, None])[None])
            mask = np.asarray(answer["outputs"][0]["data"], np.uint8).reshape(answer["outputs"][0]["shape"])
            assert np.array_equal(mask[0], unet.predict(frame).mask)


@pytest.mark.skipif(not SERVE_PY.is_file(), reason=f"no serving environment at {SERVE_PY}")
def test_the_ensemble_runs_on_triton_with_no_edgemed_in_its_python(cnn_bundle, unet_bundle, tmp_path):
    """The exported ensemble (pre step, engine, post step) on the real Triton here, answering raw frames as predict
    does, its Python steps in a stub where edgemed does not import; only the engine step is swapped (see above)."""
    out = tmp_path / "repo"
    export_repository([cnn_bundle, unet_bundle], out, backend="onnxruntime")
    for engine in out.glob("*_engine"):
        config = (engine / "config.pbtxt").read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"')
        (engine / "config.pbtxt").write_text(config)
        (engine / "1" / "model.py").write_text(SWAPPED_ENGINE)
    with _triton_from(_stock_python(tmp_path), out, tmp_path) as base:
        _answers_as_predict(base, cnn_bundle, unet_bundle, {"cnn": "cnn_breastmnist", "unet": "unet_busi"})


@pytest.mark.skipif(not SERVE_PY.is_file(), reason=f"no serving environment at {SERVE_PY}")
def test_the_python_backend_export_brings_its_own_environment(cnn_bundle, tmp_path):
    """--pack-env: the Python-backend model (the whole edgemed pipeline) on the real Triton here, started from a Python
    without edgemed; Triton's Python backend activates the model's packed environment (EXECUTION_ENV_PATH: edgemed
    copied from this install, its libraries pip-installed for the target Python), and the answers are predict's."""
    home = next(line.split("=", 1)[1].strip() for line in (SERVE_PY.parent.parent / "pyvenv.cfg").read_text()
                .splitlines() if line.startswith("home"))
    version = subprocess.run([str(SERVE_PY), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True, timeout=TIMEOUT).stdout.strip()
    out = tmp_path / "repo"
    export_repository([cnn_bundle], out, backend="python", env_python=version, env_home=home)
    env = out / "cnn_breastmnist" / "edgemed_env"
    assert (env / "bin" / "activate").is_file() and (env / "pyvenv.cfg").read_text().startswith(f"home = {home}")
    assert "EXECUTION_ENV_PATH" in (out / "cnn_breastmnist" / "config.pbtxt").read_text()
    with _triton_from(_stock_python(tmp_path), out, tmp_path) as base:
        _answers_as_predict(base, cnn_bundle, None, {"cnn": "cnn_breastmnist"}, "IMAGE_UINT8")


def test_the_packed_environment_carries_every_package_the_runtime_path_imports():
    """--pack-env copies edgemed's runtime packages (triton_env.RUNTIME_PACKAGES) into the model's environment: a
    package that ``import edgemed`` and ``load`` reach but the list lacks fails the served model at start (the
    ensemble merge did: No module named 'edgemed.ensemble'). The packages a fresh process imports must be listed."""
    from edgemed.serve.triton_env import RUNTIME_PACKAGES

    code = ("import sys, edgemed, edgemed.loading, edgemed.pipeline, edgemed.selection, edgemed.serve.triton_model\n"
            "mods = [m for m in sys.modules if m.startswith('edgemed')]\n"
            "print('\\n'.join(sorted({m if getattr(sys.modules[m], '__path__', None) else m.rpartition('.')[0]"
            " for m in mods})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    packages = set(out.stdout.split())
    assert packages and packages <= set(RUNTIME_PACKAGES), sorted(packages - set(RUNTIME_PACKAGES))


def test_an_ensemble_exports_whole_for_the_python_backend_once_its_combination_passed(cnn_pair, tmp_path):
    """Issue 23: an ensemble is one Python-backend model holding its whole folder (members hashed as at load);
    the native export, which serves one artifact, refuses it in one line; a combination never judged (or judged on
    other artifacts) serves only when that verdict is accepted, and nothing is left on disk by a refusal."""
    import shutil

    from edgemed.errors import InputError

    names = export_repository([cnn_pair], tmp_path / "repo")
    assert names == ["cnn_pair"]
    copied = tmp_path / "repo" / "cnn_pair" / "1" / "bundle"
    with edgemed.load(copied) as served, edgemed.load(cnn_pair) as here:
        frame = next(iter(ImageSet.open(samples_dir("breastmnist"))))[1]
        np.testing.assert_array_equal(served.predict(frame).probabilities, here.predict(frame).probabilities)
    config = (tmp_path / "repo" / "cnn_pair" / "config.pbtxt").read_text()
    assert '"TENSOR"' not in config and 'key: "ensemble_sha256"' in config
    with pytest.raises(InputError, match="is an ensemble.*--backend python"):
        export_repository([cnn_pair], tmp_path / "native", backend="onnxruntime")
    unjudged = tmp_path / "unjudged"
    shutil.copytree(cnn_pair, unjudged)
    manifest = json.loads((unjudged / "ensemble.json").read_text())
    del manifest["gate"]
    (unjudged / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="never judged.*--accept uncertified"):
        export_repository([unjudged], tmp_path / "refused")
    assert not (tmp_path / "native").exists() and not (tmp_path / "refused").exists()
    assert export_repository([unjudged], tmp_path / "accepted", accept="uncertified") == ["unjudged"]


def test_a_beat_model_exports_the_leads_a_client_must_send(tmp_path):
    """The config names the leads a served beat must hold where the spec selects them by name; by index (or not at
    all) a beat's leads go as they are, and the server's select_leads picks them (the parameter is left out)."""
    import re

    def params(bundle, repo):
        export_repository([bundle], repo)
        text = (repo / "ecg_cnn" / "config.pbtxt").read_text()
        return dict(re.findall(r'key: "([^"]+)"\n  value: \{ string_value: "([^"]*)" \}', text))

    by_name = convert_ecg_fp32(tmp_path / "by_name", windows=24)
    spec = [dict(op) for op in json.loads((by_name / "edgemed.json").read_text())["preprocess"]]
    assert [op["leads"] for op in spec if op["op"] == "select_leads"] == [["MLII"]]
    named = params(by_name, tmp_path / "r1")
    assert named["input_kind"] == "signal" and named["leads"] == "MLII" and "features" not in named
    indexed = [{**op, "leads": [0]} if op["op"] == "select_leads" else op for op in spec]
    by_index = convert_ecg_fp32(tmp_path / "by_index", windows=24, preprocess=tuple(indexed))
    assert "leads" not in params(by_index, tmp_path / "r2")  # was a TypeError joining [0]
