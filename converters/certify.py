"""``edgemed certify``: judge a bundle's artifacts again on a site's own data, on the device, without rebuilding.

Conversion can only certify on the cases it was given; a hospital holds thousands more of its own patients'
images. Certify runs every artifact of the bundle on them where it will run (the device's engines and
settings), compares each with the bundle's FP32 reference (the FP32 ONNX model, at parity with the source
model since conversion) case by case from disk, and judges it by the same rule conversion used
(:func:`edgemed.gate.verdict.judge_artifact`: FP32 at parity is certified as the reference is; FP16 and INT8 by their
budget, with bounds). The result is a new record beside the bundle (:mod:`edgemed.certification`), optionally
signed; no artifact file is touched, so ``verify`` still passes and the bundle's own signature still holds.
No torch or onnx is needed: this runs on the device.
"""

from __future__ import annotations

import datetime as _dt
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgemed import __version__
from edgemed.backends import BACKENDS
from edgemed.bundle import Bundle
from edgemed.certification import ArtifactCertification, Certification, DataRecord, sign, write
from edgemed.datasets import ImageSet
from edgemed.errors import BundleError
from edgemed.gate.drift import case_margins
from edgemed.gate.verdict import PARITY, PARITY_ATOL, PARITY_RTOL, Budget, default_budget, summary
from edgemed.input_kinds import input_kind
from edgemed.measures.margins import Margins, spaced_population
from edgemed.output_reader import OutputReader
from edgemed.tasks import task_named


def certify(bundle: str | Path, data: str | Path, data_key: str | None = None, val: str | Path | None = None,
            val_labels: str | Path | None = None, val_key: str | None = None, budget: str | None = None,
            margin: float = 0.005, device: str = "cpu", threads: int | None = None, key: str | Path | None = None,
            log: Callable[[str], None] = lambda s: None) -> tuple[Path, Certification]:
    """Certify every artifact of ``bundle`` on ``data`` (a folder or .npz of images, or signal windows); returns
    the record's path and the record."""
    from edgemed.devices.detect import detect, resolve_device
    from edgemed.devices.profiles import load_profiles
    from edgemed.selection import check_request, engine_options

    from .calibration import named_tensors
    from .cases import CaseStore, fill
    from .measure import Gauge
    from .reference import Reference

    b = Bundle.open(bundle)
    m = b.manifest
    device = check_request(device, None, None, threads)
    profile = resolve_device(device, detect(probe_openvino=device in ("auto", "npu")), load_profiles())
    reference_art = m.artifact("onnxruntime", "fp32")
    if reference_art is None or reference_art.drift.budget != PARITY or not reference_art.drift.passed:
        raise BundleError(f"bundle {b.path} has no FP32 ONNX artifact at parity with its source model",
                          "rebuild the bundle with edgemed convert (it always makes one)")
    task = m.model.task
    rule = Budget.parse(budget, task) if budget is not None else None
    images = ImageSet.open(data, key=data_key)
    input_kind(m.model.input_kind).check_holds(images, "--eval", "pass data of the model's own kind")
    pre = b.preprocessor()
    names = [m.input.name] + [f.name for f in m.features]
    if m.features:  # each site case carries the inputs beside the main one (a signal set's features, by name)
        from edgemed.feature_inputs import FeatureFeeds

        pre.feature_feeds = FeatureFeeds(m.features)
    reader = OutputReader(m.output.names[0], m.postprocess.detection)
    unit = images.unit
    with tempfile.TemporaryDirectory(prefix="edgemed-certify-") as scratch:
        scratch = Path(scratch)
        log(f"certify: {len(images)} {unit} from {data} through the bundle's preprocessing")
        cases = fill(CaseStore(scratch, "site"), named_tensors(images, pre))
        with Reference(b.file(reference_art.file), names, reader) as ref:
            scale = 0.0
            for x in cases.inputs():
                out = ref(x)
                cases.add_output(out)
                scale = max(scale, _magnitude(out))
            labelled, labelled_data = _labelled(val, val_labels, val_key, b, pre, ref, scratch, margin) if val else \
                (None, None)
        kind = m.output.kind
        population = _population(cases, task, kind)
        gauge = Gauge(tuning=cases, verdict=cases, reader=reader, task=task, output_kind=kind,
                      labels=list(m.model.labels), budget=rule or default_budget(task), population=population,
                      tolerance=PARITY_ATOL + PARITY_RTOL * scale, labelled=labelled,
                      reference_by=f"{reference_art.file} (onnxruntime/fp32, at parity with the source model)",
                      unit=unit, input_names=names)
        verdicts = []
        from edgemed.runtimes import create_engine

        for art in m.artifacts:
            if art.file == reference_art.file:
                continue
            gauge.budget = rule or (default_budget(task) if art.drift.budget == PARITY else
                                    Budget.parse(art.drift.budget, task))
            log(f"  {art.key} on {profile.engine_device(art.backend)}: measuring {len(cases)} {unit}")
            with create_engine(art.backend, b.file(art.file), device=profile.engine_device(art.backend),
                               threads=threads, precision=art.precision, **engine_options(art, profile)) as engine:
                measured = gauge.measure(engine, art.precision)
            log(f"  {art.key}: {summary(measured.drift)}")
            verdicts.append(ArtifactCertification(file=art.file, sha256=art.sha256, backend=art.backend,
                                                  precision=art.precision, drift=measured.drift,
                                                  clinical=measured.clinical))
    record = Certification(
        bundle_manifest_sha256=b.manifest_sha256(), created=_now(), host=platform.node(),
        device=profile.engine_device("onnxruntime"), edgemed=__version__, tools=_versions(),
        reference=gauge.reference_by, data=DataRecord(source=str(Path(data).resolve()), sha256=images.sha256(),
                                                       cases=len(images), unit=unit),
        labelled=labelled_data, budget=str(rule) if rule else None, artifacts=verdicts)
    if key is not None:
        record = sign(record, Path(key))
    return write(b.path, record), record


def _magnitude(output) -> float:
    if isinstance(output, np.ndarray):
        return float(np.abs(output).max()) if output.size else 0.0
    return float(np.abs(output.scores).max()) if len(output.scores) else 0.0


def _population(cases, task: str, kind: str) -> dict[str, Margins]:
    if not task_named(task).has_margins:
        return {}
    parts = [case_margins(o, task, kind) for o in cases.outputs()]
    if not parts:
        return {}
    return spaced_population({name: Margins.join([p[name] for p in parts]) for name in parts[0]})


def _labelled(val, val_labels, val_key, b: Bundle, pre, ref, scratch: Path, margin: float):
    from .measure import labelled_cases

    images = ImageSet.open(val, key=val_key)
    cases = labelled_cases(images, val_labels, b.task, b.labels, pre, ref, scratch, margin, val)
    return cases, DataRecord(source=str(Path(val).resolve()), sha256=images.sha256(), cases=len(images),
                             unit=images.unit)


def _versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name, info in BACKENDS.items():
        version = info.installed_version()
        if version is not None:
            out[name] = version
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
