"""The manifest contract: one typed reader, one writer, a published JSON Schema, and v1 bundles migrated.

The property tests replace every field of a real manifest, at every depth, with values of every
JSON type and with out-of-range values: the reader refuses each invalid one with a BundleError
naming the field (never another exception), and the published JSON Schema, an independent
statement of the same contract, agrees on what is valid.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemed import load
from edgemed.bundle import Bundle
from edgemed.errors import BundleError, EdgemedError
from edgemed.manifest import SCHEMA_FILE, SCHEMA_VERSION, Manifest, json_schema

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "tests" / "fixtures" / "bundles" / "cnn_schema_v1"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))

# One value of every JSON type, plus values out of every range the manifest uses.
REPLACEMENTS = [None, True, False, 0, -1, 1, 3, 2**41, 0.5, -0.5, 1e300, "", "x", "batch", "a" * 300,
                "0" * 64, [], [1], ["x"], [None], {}, {"x": 1}, {"op": "exec"}]
DELETE = object()


def _paths(node, prefix=()):
    """Every (path, value) in a JSON document, depth first."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _replaced(doc, path, value):
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _named(message: str, path: tuple) -> bool:
    """The error names the field: its top-level key and its own key (or its list's key)."""
    keys = [k for k in path if isinstance(k, str)]
    return keys[0] in message and keys[-1] in message


@pytest.fixture(scope="module")
def manifest_doc(cnn_bundle_all):
    return json.loads((cnn_bundle_all / "edgemed.json").read_text())


def test_the_published_schema_is_the_one_the_code_derives():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "edge/manifest.schema.json is stale: regenerate it with python scripts/write_manifest_schema.py")
    jsonschema.Draft202012Validator.check_schema(json_schema())


def test_written_manifests_validate_against_the_schema(manifest_doc, unet_bundle):
    VALIDATOR.validate(manifest_doc)
    VALIDATOR.validate(json.loads((unet_bundle / "edgemed.json").read_text()))
    assert manifest_doc["schema_version"] == SCHEMA_VERSION
    again = Manifest.from_json(json.dumps(manifest_doc)).to_json()
    assert json.loads(again) == manifest_doc  # the writer and the reader are each other's inverse


def test_every_field_at_every_depth_refused_by_name_or_valid_by_the_schema(manifest_doc):
    """Exhaustive: every field of a real manifest (every ORT/OpenVINO precision) x every kind of value."""
    checked = refused = 0
    for path, _ in list(_paths(manifest_doc)):
        if not path:
            continue
        for value in REPLACEMENTS + [DELETE]:
            doc = _replaced(manifest_doc, path, value)
            valid = VALIDATOR.is_valid(doc)
            try:
                Manifest.from_json(json.dumps(doc))
            except BundleError as exc:
                refused += 1
                assert _named(str(exc), path) or (valid and _cross_field(str(exc))), (path, value, str(exc))
            else:
                assert valid, f"the reader accepted {value!r} at {path}, which the schema refuses"
            checked += 1
    assert checked > 2000 and refused > checked // 3


def _cross_field(message: str) -> bool:
    """Rules the schema cannot express (labels vs outputs, unique files and artifacts) still name a field."""
    return re.search(r"labels|artifacts|files|max_shape|tensorrt", message) is not None


@pytest.fixture(scope="module")
def scratch_bundle(cnn_bundle_all, tmp_path_factory):
    dst = tmp_path_factory.mktemp("mut") / "b"
    shutil.copytree(cnn_bundle_all, dst)
    return dst


# Derandomized in CI (the same examples every run, so a red CI is a real change); EDGEMED_FUZZ_EXAMPLES=5000
# with EDGEMED_FUZZ_RANDOM=1 explores afresh.
@settings(max_examples=int(os.environ.get("EDGEMED_FUZZ_EXAMPLES", 150)), deadline=None,
          derandomize=not os.environ.get("EDGEMED_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_load_refuses_every_invalid_manifest_by_name_and_never_crashes(manifest_doc, scratch_bundle, data):
    """Through the public entry point: ``edgemed.load`` on the mutated bundle."""
    paths = [p for p, _ in _paths(manifest_doc) if p]
    path = data.draw(st.sampled_from(paths))
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                                       allow_infinity=False)
                               | st.text(max_size=40), lambda inner: st.lists(inner, max_size=3)
                               | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
    value = data.draw(st.sampled_from(REPLACEMENTS + [DELETE]) | json_values)
    doc = _replaced(manifest_doc, path, value)
    (scratch_bundle / "edgemed.json").write_text(json.dumps(doc))
    valid = VALIDATOR.is_valid(doc)
    try:
        with load(scratch_bundle) as pipe:
            pipe.describe()
    except BundleError as exc:
        assert "Traceback" not in str(exc)
        assert _named(str(exc), path) or (valid and _cross_field(str(exc))), (path, value, str(exc))
    except EdgemedError as exc:  # e.g. a verdict changed to failed: no eligible artifact; a user-facing answer
        assert valid, (path, value, str(exc))
    else:
        assert valid, f"load accepted {value!r} at {path}, which the schema refuses"


def test_schema_1_bundles_written_by_edgemed_0_1_are_migrated():
    b = Bundle.open(V1)
    m = b.manifest
    assert m.schema_version == SCHEMA_VERSION
    ort_int8 = m.artifact("onnxruntime", "int8")
    assert ort_int8.build.quantized_layers.int8 == 7 and ort_int8.drift.metrics["agreement"].cases == 8
    assert ort_int8.build.settings["method"] == "minmax" and ort_int8.build.attempts
    ov_int8 = m.artifact("openvino", "int8")
    assert ov_int8.drift.verdict == "failed" and ov_int8.build.quantized_layers.fake_quantize_ops == 8
    assert m.artifacts[0].drift.budget == "parity" and m.artifacts[0].drift.tolerance > 0
    with load(V1) as pipe:
        assert pipe.artifact.file == "model.onnx"
        assert pipe.predict(ROOT / "edge/assets/samples/breastmnist/breastmnist_test_000.png").label


def test_a_schema_1_tensorrt_artifact_gets_the_options_it_was_gated_with():
    """v1 gated TensorRT engines with batch 1..(evaluation images) and --dla-core; migration recovers them."""
    doc = json.loads((V1 / "edgemed.json").read_text())
    trt = copy.deepcopy(doc["artifacts"][1])
    trt.update(backend="tensorrt", precision="fp16", file="model.tensorrt-fp16.onnx",
               build={"engine": "built and cached on the target", "builder_flags": ["FP16", "GPU_FALLBACK"],
                      "dla_core": 0, "seconds": 3.0})
    doc["artifacts"].append(trt)
    m = Manifest.from_json(json.dumps(doc))
    options = m.artifact("tensorrt", "fp16").build.tensorrt
    assert options.dla_core == 0 and options.min_shape == [1, 1, 28, 28]
    assert options.max_shape == [doc["provenance"]["evaluation_count"], 1, 28, 28]


@pytest.mark.parametrize("text,needle", [
    (f'{{"schema_version": {SCHEMA_VERSION + 1}}}', "newer than this edgemed reads"),
    ('{"schema_version": 0}', "schema_version 0"),
    ('{"schema_version": "2"}', "schema_version is missing or not an integer"),
    ("[]", "not a JSON object"),
    ('{"schema_version": 2, "x": NaN}', "not valid JSON"),
])
def test_malformed_manifests(text, needle):
    with pytest.raises(BundleError, match=needle):
        Manifest.from_json(text)


def test_no_module_but_the_manifest_reads_the_manifest_dict():
    """The contract is typed code: nothing indexes the manifest's JSON outside edgemed.manifest."""
    offenders = []
    pattern = re.compile(r"""manifest\[|manifest\.get\(|\[["'](drift|build|provenance)["']\]|"""
                         r"""\.get\(["'](drift|build)["']""")
    for folder in ("edge", "converters", "runtimes", "benchmarks", "devices"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name in ("manifest.py", "manifest_v1.py"):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
