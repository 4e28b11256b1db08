"""``edgemed export triton``: a standard Triton model repository (and a KServe InferenceService) from bundles.

One Python-backend model per bundle, named from the bundle, running the edgemed pipeline
(:mod:`edgemed.serve.triton_model`) on a copy of the bundle inside the model's version folder, so the
repository is self-contained and every file keeps the hash ``load`` checks. ``config.pbtxt``
declares the inputs and outputs of the task, the maximum batch, dynamic batching and instance
groups; its parameters carry the bundle hash, the artifact that will serve and that artifact's
verdict, which Triton's model-config endpoint then shows to any client.

The verdicts travel: exporting selects the artifact exactly as ``load`` would on the server
(never a failed or uncertified one unless ``accept`` names the verdict), so a repository never
serves what the device would refuse. A signed bundle's signature is checked first when a public
key is given.

A beat classifier is one model the same way, pre-cut beats with their rate in (``SIGNAL_FP32``, ``FS``); a model
with inputs beside the main one (RR intervals beside a beat, numbers beside an image) declares each as a tensor
under its manifest name, and its config's parameters name them for any client. The native exports take
one-input image models only.

An ensemble (``edgemed ensemble``) is one model the same way: its whole folder (members and, where made, the
baked graph) in the version folder, ``edgemed.load`` running it in the stub, raw frames in (its members each
preprocess for themselves, so no ``TENSOR`` input), the task's usual outputs out. Each member's artifact is
chosen as ``load`` would; the combination of those must have passed its own gate.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..backends import TRITON_EXPORTS
from ..bundle import Bundle, atomic_directory
from ..ensemble.files import ENSEMBLE, is_ensemble
from ..errors import InputError
from ..hashing import sha256_file
from ..input_kinds import input_kind
from ..manifest import Artifact
from ..selection import VERDICTS, select
from ..signal_preprocess import selected_leads
from ..tasks import task_named

MODEL_PY = '''"""Triton Python-backend entry point written by edgemed export triton: the edgemed pipeline."""
from edgemed.serve.triton_model import TritonPythonModel  # noqa: F401
'''


def model_name(name: str) -> str:
    """Triton model names: letters, digits, '_', '-', '.' only."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:120] or "model"


@dataclass(frozen=True)
class ServedModel:
    """One Python-backend model of the repository: what its config declares (task outputs, the TENSOR input where
    frames can arrive preprocessed) and the parameters it carries to ``initialize`` and to any client."""

    name: str
    task: str
    labels: list[str]
    tensor_dims: tuple[int, ...] | None  # (C, H, W) of a preprocessed frame; None: an ensemble (members preprocess)
    params: dict[str, str]
    backends: frozenset[str]  # the runtime libraries its execution environment needs
    frames: bool = True  # cases are pictures (IMAGE_* inputs); else pre-cut beats with their rate (SIGNAL_FP32, FS)
    features: tuple[tuple[str, int], ...] = ()  # the inputs beside the main one: (name, features per case)


def config_pbtxt(model: ServedModel, max_batch: int, queue_delay_us: int, instances: int,
                 env: str | None = None) -> str:
    if model.frames:  # frames are (H, W, C) after the batch axis, C = 1 for grey: one rank for any size and channels
        inputs = [f'  {{ name: "{n}" data_type: {t} dims: [ -1, -1, -1 ] optional: true allow_ragged_batch: true }}'
                  for n, t in (("IMAGE_UINT8", "TYPE_UINT8"), ("IMAGE_UINT16", "TYPE_UINT16"),
                               ("IMAGE_FP32", "TYPE_FP32"))]
    else:  # a beat window (T, leads) in mV, any length, with its sampling rate in Hz
        inputs = ['  { name: "SIGNAL_FP32" data_type: TYPE_FP32 dims: [ -1, -1 ] optional: true '
                  'allow_ragged_batch: true }',
                  '  { name: "FS" data_type: TYPE_FP32 dims: [ 1 ] optional: true }']
    if model.tensor_dims is not None:
        dims = ", ".join(str(d) for d in model.tensor_dims)
        inputs.append(f'  {{ name: "TENSOR" data_type: TYPE_FP32 dims: [ {dims} ] optional: true }}')
    # the model's other inputs, one tensor each under the manifest's name: every request carries them
    inputs += [f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {k} ] }}' for name, k in model.features]
    params = dict(model.params)
    if env is not None:  # Triton's Python backend starts this model's stub in that environment
        params["EXECUTION_ENV_PATH"] = env
    served = task_named(model.task).served_outputs(model.labels)
    # no batching: Triton then takes the dims as written, so the batch axis is spelled out
    outputs = [(t if max_batch else t.batched()).pbtxt() for t in served]
    if max_batch == 0:
        inputs = [i.replace("dims: [ ", "dims: [ -1, ").replace(" allow_ragged_batch: true", "") for i in inputs]
    lines = [f'name: "{model.name}"', 'backend: "python"', f"max_batch_size: {max_batch}", "input ["]
    lines += [",\n".join(inputs), "]", "output [", ",\n".join(outputs), "]"]
    if max_batch > 0:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    lines += ["instance_group [", f"  {{ kind: KIND_CPU count: {instances} }}", "]"]
    for k, v in params.items():
        lines += ["parameters {", f'  key: "{k}"', f'  value: {{ string_value: "{v}" }}', "}"]
    return "\n".join(lines) + "\n"


def inference_service(names: list[str], storage_uri: str, backend: str = "python", env: str | None = None) -> str:
    """A KServe v1beta1 InferenceService serving the repository with Triton (one per repository)."""
    if backend != "python":
        needs = "      # a stock Triton image runs this repository: native engines, numpy-only Python steps\n"
    elif env:
        needs = f"      # a stock Triton image runs this repository: each model brings its Python {env} environment\n"
    else:
        needs = "      # the Python backend's environment must have edgemed installed: pip install edgemed\n"
    return (
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata:\n"
        f"  name: edgemed-{re.sub(r'[^a-z0-9-]', '-', names[0].lower())[:40]}\n"
        "spec:\n"
        "  predictor:\n"
        "    triton:\n"
        "      protocolVersion: v2\n"
        f"      storageUri: {storage_uri}\n"
        f"{needs}"
        "      args: [\"--strict-model-config=true\"]\n"
        "      resources:\n"
        "        requests: {cpu: \"2\", memory: 2Gi}\n"
        "        limits: {cpu: \"2\", memory: 4Gi}\n"
    )


# x86-64 glibc wheels: NVIDIA's Triton images are Ubuntu 22.04/24.04 (glibc 2.35/2.39); aarch64 images need their tags
DEFAULT_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "manylinux_2_17_x86_64")


def export_repository(bundles: list[Path], out: Path, max_batch: int = 8, queue_delay_us: int = 0,
                      instances: int = 1, accept: str | None = None, pubkey: Path | None = None,
                      storage_uri: str = "pvc://edgemed/models", force: bool = False,
                      backend: str = "python", env_python: str | None = None, env_home: str = "/usr/bin",
                      env_platforms: tuple[str, ...] = DEFAULT_PLATFORMS, callers: int = 1) -> list[str]:
    """Write the repository; returns the names of the models a client calls. All or nothing: a half-written
    repository is never left. ``env_python`` (Python backend only): give each model an execution environment
    for that Python (edgemed.serve.triton_env), so a stock image runs it."""
    if env_python is not None and backend != "python":
        raise InputError(f"--pack-env is for the Python backend; --backend {backend} needs no environment",
                         "drop --pack-env, or export with --backend python")
    if backend not in TRITON_EXPORTS:
        raise InputError(f"unknown Triton export backend {backend!r}", f"use one of {', '.join(TRITON_EXPORTS)}")
    if not bundles:
        raise InputError("no bundle given", "pass one or more bundle directories")
    if not 0 <= max_batch <= 1024 or instances < 1:
        raise InputError(f"--max-batch {max_batch} / --instances {instances} out of range",
                         "use a max batch 0..1024 (0: no batching) and at least one instance")
    names = []
    with atomic_directory(out, force=force) as tmp:
        for path in map(Path, bundles):
            if pubkey is not None:
                from ..signing import verify_signature

                verify_signature(path, pubkey)
            if is_ensemble(path):
                if backend != "python":
                    raise InputError(f"{path} is an ensemble; --backend {backend} exports one bundle's artifact on "
                                     "Triton's native backend", "export ensembles with --backend python (add "
                                     "--pack-env for a stock Triton image)")
                model = _ensemble_model(path, accept, callers)
            else:
                model, chosen, bundle = _bundle_model(path, backend, accept, callers)
            if model.name in names:
                raise InputError(f"two bundles are both named {model.name}", "rename one with convert --name")
            names.append(model.name)
            if backend != "python":
                from .triton_native import write_native

                native = {k: v for k, v in model.params.items() if k not in ("accept", "device", "callers")}
                write_native(tmp, path, bundle, model.name, chosen, backend, max_batch, queue_delay_us,
                             instances, native)
                continue
            model_dir = tmp / model.name
            (model_dir / "1").mkdir(parents=True)
            shutil.copytree(path, model_dir / "1" / "bundle")
            env = None
            if env_python is not None:
                from .triton_env import ENV_DIR, write_environment

                write_environment(model_dir / ENV_DIR, set(model.backends), env_python, env_home, env_platforms)
                env = f"$$TRITON_MODEL_DIRECTORY/{ENV_DIR}"
            (model_dir / "config.pbtxt").write_text(config_pbtxt(model, max_batch, queue_delay_us, instances, env))
            (model_dir / "1" / "model.py").write_text(MODEL_PY)
        (tmp / "inferenceservice.yaml").write_text(inference_service(names, storage_uri, backend, env_python))
    return names


def _bundle_model(path: Path, backend: str, accept: str | None, callers: int
                  ) -> tuple[ServedModel, Artifact, Bundle]:
    """One bundle and the artifact that will serve it, chosen exactly as ``load`` would on the server."""
    b = Bundle.open(path)
    m = b.manifest
    kind = input_kind(m.model.input_kind)
    chosen = select(b, "cpu", None if backend == "python" else backend, None, None, accept).artifact
    if accept is None and chosen.verdict != "passed":
        raise InputError(f"{path}: no passed artifact to serve", "pass --accept to serve an unverified one")
    params = {"bundle_sha256": b.manifest_sha256(), "artifact": chosen.file, "backend": chosen.backend,
              "precision": chosen.precision, "verdict": chosen.verdict, "accept": accept or "", "task": b.task,
              "labels": ",".join(b.labels), "device": "cpu", "callers": str(callers), "input_kind": kind.name}
    # what a client must send beside the main input (convert's --features syntax), and the leads a beat must hold
    # where the spec selects them by name (by index, or none: the beat's leads as they are); only where there are
    # any (Triton's JSON leaves empty strings out)
    features = ";".join(f"{f.name}={','.join(f.features)}" for f in m.features)
    read = selected_leads(m.preprocess) if kind.recordings else None
    leads = ",".join(read) if read and all(isinstance(n, str) for n in read) else ""
    params.update({k: v for k, v in (("features", features), ("leads", leads)) if v})
    model = ServedModel(model_name(b.name), b.task, list(b.labels), tuple(m.input.static_shape[1:]), params,
                        frozenset({chosen.backend}), kind.frames,
                        tuple((f.name, len(f.features)) for f in m.features))
    return model, chosen, b


def _ensemble_model(path: Path, accept: str | None, callers: int) -> ServedModel:
    """An ensemble: each member's artifact chosen as ``load`` would (passed ones only), and the combination of
    exactly those judged by its own gate (:meth:`EnsembleManifest.combination_verdict`). A failed or never judged
    combination serves only where ``accept`` names that verdict."""
    from ..ensemble.opening import open_ensemble

    opened = open_ensemble(path)
    chosen = [select(b, "cpu").artifact for b in opened.members]
    keys = [a.key for a in chosen]
    verdict = opened.manifest.combination_verdict(keys)
    if VERDICTS.index(verdict) > VERDICTS.index(accept or "passed"):
        why = "never judged" if verdict == "uncertified" else "failed its gate"
        raise InputError(f"{path}: the combination that would serve ({', '.join(keys)}) {why}",
                         f"rebuild the ensemble (edgemed ensemble ... --eval FRAMES), or pass --accept {verdict}")
    pinned = {"backend": {a.backend for a in chosen}, "precision": {a.precision for a in chosen}}
    params = {"ensemble_sha256": sha256_file(path / ENSEMBLE), "artifact": ",".join(keys), "verdict": verdict,
              "members": ",".join(b.manifest_sha256() for b in opened.members), "task": opened.manifest.task,
              "labels": ",".join(opened.manifest.labels), "device": "cpu", "callers": str(callers), "accept": "",
              **{k: v.pop() if len(v) == 1 else "" for k, v in pinned.items()}}
    return ServedModel(model_name(path.resolve().name), opened.manifest.task, list(opened.manifest.labels), None,
                       params, frozenset(a.backend for a in chosen))
