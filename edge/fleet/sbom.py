"""``edgemed sbom``: a bundle as a CycloneDX 1.6 ML-BOM (machine-learning bill of materials).

Regulators ask for a software bill of materials of a medical device (the FDA's premarket cybersecurity
guidance) and, for AI, a record of what the model is and how it was checked. The BOM names the model as a
``machine-learning-model`` component with a model card (task, inputs and outputs, the data recorded at
training and conversion, the gate's verdicts with their bounds as performance metrics, limitations), every
file of the bundle with its SHA-256, and the runtime libraries with the versions installed where the BOM
is written. It is built with cyclonedx-python-lib's model classes and validated with its strict JSON
validator before it is written. That library (11.x) has no class for the model card yet, so the card is
added to the serialised component as the 1.6 schema defines it, and the whole document is validated after.
"""

from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from .. import __version__
from ..atomic import write_atomic
from ..backends import BACKENDS
from ..bundle import MANIFEST, Bundle
from ..errors import EdgemedError
from ..gate.verdict import budget_metrics
from ..samples import shipped_model
from ..tasks import task_named

MODEL_REF = "model"
# What load -> predict imports (pyproject's runtime dependencies), and each backend's own package.
RUNTIME = ("numpy", "onnxruntime", "msgspec", "scipy", "pillow", "click")


def _sha256(digest: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=digest)]


def _props(**values: Any) -> list[Property]:
    return [Property(name=f"edgemed:{k}", value=str(v)) for k, v in values.items() if v not in (None, "")]


def _library(name: str) -> Component | None:
    try:
        version = importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None
    return Component(type=ComponentType.LIBRARY, name=name, version=version, bom_ref=f"pypi:{name}",
                     purl=PackageURL(type="pypi", name=name.lower(), version=version))


def build_bom(bundle: Path, version: str | None = None) -> tuple[Bom, dict[str, Any]]:
    """The BOM (library objects) and the model card (schema dict) for a verified bundle."""
    b = Bundle.open(bundle)
    m = b.manifest
    model = Component(type=ComponentType.MACHINE_LEARNING_MODEL, name=b.name, version=version or None,
                      bom_ref=MODEL_REF, hashes=_sha256(b.manifest_sha256()),
                      description=f"{b.task} model, edgemed bundle (manifest {MANIFEST}, schema {m.schema_version})",
                      properties=_props(task=b.task, labels=", ".join(b.labels), input_kind=m.model.input_kind,
                                        source_sha256=m.provenance.source_sha256,
                                        source_kind=m.provenance.source_kind, created=m.provenance.created))
    bom = Bom(metadata=BomMetaData(component=model, properties=_props(generator=f"edgemed {__version__} sbom")))
    libraries = {name: _library(name) for name in ("edgemed", *RUNTIME)}
    for art in m.artifacts:
        package = BACKENDS[art.backend].package
        libraries.setdefault(package, _library(package))
    for lib in libraries.values():
        if lib is not None:
            bom.components.add(lib)
    for art in m.artifacts:
        files = []
        for record in art.files():
            comp = Component(type=ComponentType.FILE, name=record.file, bom_ref=f"file:{record.file}",
                             hashes=_sha256(record.sha256),
                             properties=_props(bytes=record.bytes, backend=art.backend, precision=art.precision,
                                               verdict=art.verdict, budget=art.drift.budget,
                                               verdict_cases=art.drift.cases))
            bom.components.add(comp)
            files.append(comp)
        runtime = libraries.get(BACKENDS[art.backend].package)
        for comp in files:
            bom.register_dependency(model, [comp])
            if runtime is not None:
                bom.register_dependency(comp, [runtime])
    for record in m.files:
        comp = Component(type=ComponentType.FILE, name=record.file, bom_ref=f"file:{record.file}",
                         hashes=_sha256(record.sha256), properties=_props(bytes=record.bytes))
        bom.components.add(comp)
        bom.register_dependency(model, [comp])
    edgemed = libraries.get("edgemed")
    if edgemed is not None:
        bom.register_dependency(model, [edgemed])
        bom.register_dependency(edgemed, [lib for n, lib in libraries.items() if lib is not None and n in RUNTIME])
    return bom, model_card(b)


def model_card(b: Bundle) -> dict[str, Any]:
    """The CycloneDX 1.6 ``modelCard`` object: what the bundle records, and nothing it does not."""
    m = b.manifest
    training = _training(b)
    datasets = []
    if training:
        datasets.append({"type": "dataset", "name": training.get("data", "training data"),
                         "contents": {"properties": [{"name": f"edgemed:training:{k}", "value": str(v)}
                                                     for k, v in training.items() if k != "data"]}})
    p = m.provenance
    for role, digest, count, source in (("calibration", p.calibration_sha256, p.calibration_count, None),
                                        ("verdict (gate evaluation)", p.evaluation_sha256, p.evaluation_count,
                                         p.evaluation_source)):
        if digest:
            props = [{"name": "edgemed:sha256", "value": digest}, {"name": "edgemed:cases", "value": str(count)}]
            if source:
                props.append({"name": "edgemed:source", "value": source})
            datasets.append({"type": "dataset", "name": f"{role} set", "contents": {"properties": props}})
    parameters: dict[str, Any] = {
        "task": b.task,
        "inputs": [{"format": f"{m.model.input_kind} {m.input.layout} {m.input.dtype} {list(m.input.shape)}"}],
        "outputs": [{"format": f"{task_named(b.task).output_format}: {', '.join(b.labels)}"}],
    }
    card = shipped_card(b)
    if card:
        parameters["approach"] = {"type": "supervised"}  # the shipped models are trained on labelled data
        parameters["modelArchitecture"] = card.get("arch", "")
    if datasets:
        parameters["datasets"] = datasets
    return {"bom-ref": "model-card", "modelParameters": parameters,
            "quantitativeAnalysis": {"performanceMetrics": _metrics(b, training)},
            "considerations": {"technicalLimitations": _limitations(b, training),
                               "useCases": [f"{b.task} of {m.model.input_kind}s on edge devices through "
                                            "edgemed.load(...).predict(...); only artifacts whose verdict is "
                                            "'passed' are selected by default"]}}


def shipped_card(b: Bundle) -> dict[str, Any] | None:
    name = b.manifest.model.shipped
    if not name:
        return None
    try:
        return shipped_model(name)[1]
    except EdgemedError:
        return None


def _training(b: Bundle) -> dict[str, Any]:
    card = shipped_card(b)
    return dict(card.get("training", {})) if card else {}


def _metrics(b: Bundle, training: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for art in b.artifacts:
        d = art.drift
        out.append({"type": "gate verdict", "value": art.verdict,
                    "slice": f"{art.key} ({art.file}) against FP32, budget {d.budget}, {d.cases} cases"})
        for name in budget_metrics(d, b.task):
            est = d.metrics.get(name)
            if est is None:
                continue
            metric = {"type": name, "value": f"{est.value:.6g}", "slice": f"{art.key} against FP32, {est.cases} cases"}
            bounds = {k: f"{v:.6g}" for k, v in (("lowerBound", est.low), ("upperBound", est.high)) if v is not None}
            if bounds:
                metric["confidenceInterval"] = bounds
            out.append(metric)
        if art.clinical:
            for name, t in art.clinical.tests.items():
                out.append({"type": f"{name} (ground truth)", "value": f"{t.candidate:.6g}",
                            "slice": f"{art.key}, {t.cases} labelled cases; FP32 {t.fp32:.6g}, verdict {t.verdict}",
                            "confidenceInterval": {"lowerBound": f"{t.fp32 - t.drop_high:.6g}",
                                                   "upperBound": f"{t.fp32 - t.drop_low:.6g}"}})
    for key in ("val_accuracy", "test_accuracy"):
        if key in training:
            split = training.get("split", "split not recorded")
            out.append({"type": key.replace("_", " "), "value": str(training[key]),
                        "slice": f"the PyTorch source model at training ({split})"})
    return out


def _limitations(b: Bundle, training: dict[str, Any]) -> list[str]:
    out = [f"The gate measures how far each artifact departs from the FP32 model (agreement, Dice, box IoU with "
           f"95% bounds on the verdict cases), not accuracy against ground truth, unless a clinical record is "
           f"listed for the artifact ({', '.join(a.key for a in b.artifacts if a.clinical) or 'none here'})."]
    for art in b.artifacts:
        if art.verdict != "passed":
            out.append(f"{art.key} is {art.verdict}: {'; '.join(art.drift.missed) or 'see the manifest'}; it is "
                       "never selected unless named and accepted explicitly.")
    if not training:
        out.append("Training data is not recorded in the bundle; ask the model's supplier for it.")
    out.append(f"Inputs must match the preprocessing the bundle records ({len(b.manifest.preprocess)} steps) and "
               f"the input kind {b.manifest.model.input_kind}.")
    return out


def render(bom: Bom, card: dict[str, Any]) -> str:
    """Serialise as CycloneDX 1.6 JSON with the model card in place, validated strictly."""
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"]["component"]["modelCard"] = card
    text = json.dumps(doc, indent=2) + "\n"
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise EdgemedError(f"the ML-BOM does not validate against CycloneDX 1.6 ({error})",
                           "report this as an edgemed bug")
    return text


def write_sbom(bundle: str | Path, out: str | Path | None = None, version: str | None = None) -> str:
    text = render(*build_bom(Path(bundle), version))
    if out is not None:
        write_atomic(out, text)
    return text
