"""``load`` (and ``verify``) on mutated bundles: the manifest changed field by field (a value replaced, removed,
added), its bytes damaged, and the files it lists damaged, with and without their hashes rewritten to match (as
someone who can rewrite the manifest can do; signing is what stops that)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import edgemed
from edgemed.bundle import Bundle

from . import strategies as fs
from .harness import fuzz_settings, outcome

pytestmark = pytest.mark.fuzz

GOOD = np.full((28, 28), 90, np.uint8)
_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
            | st.text(max_size=12) | st.sampled_from(["../evil", "/etc/passwd", "model.onnx", "", "x" * 300, "fp32",
                                                      "onnxruntime", "passed", "NCHW", "NCL", "signal", "batch"]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=10)


@pytest.fixture(scope="module")
def work(cnn_bundle, tmp_path_factory):
    """A copy of the classifier bundle whose files each example changes and then puts back."""
    dst = tmp_path_factory.mktemp("fuzz-bundle") / "b"
    shutil.copytree(cnn_bundle, dst)
    return dst, fs.Blobs({p.name: p.read_bytes() for p in dst.iterdir()})


_CHANGED = {"edgemed.json"}  # what the last example may have changed


def _restore(work) -> None:
    root, files = work
    for name in _CHANGED:
        (root / name).write_bytes(files[name])
    _CHANGED.clear()
    _CHANGED.add("edgemed.json")


def _paths(node, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutated_manifest(data, manifest: dict) -> dict:
    paths = [p for p, _ in _paths(manifest) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = manifest
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, (dict, list)) and _has(parent, key) else None
            if parent is None:
                break
        if parent is None or not _has(parent, path[-1]):
            continue
        how = data.draw(st.sampled_from(["replace", "replace", "delete", "add", "number"]))
        key = path[-1]
        if how == "replace":
            parent[key] = data.draw(_json)
        elif how == "delete":
            del parent[key]
        elif how == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=10))] = data.draw(_json)
        elif how == "add":
            parent.append(data.draw(_json))
        elif isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = data.draw(st.sampled_from([0, -1, 2**31, 2**63, 10**400 // 10**399, 1e308, -0.0, 0.5]))
    return manifest


def _has(parent, key) -> bool:
    return key in parent if isinstance(parent, dict) else isinstance(key, int) and key < len(parent)


def _load_and_predict(root):
    with edgemed.load(root) as pipe:
        return pipe.predict(GOOD)


@fuzz_settings(400, deadline_s=20)
@given(data=st.data())
def test_manifest_field_mutations(work, data):
    _restore(work)
    root = work[0]
    manifest = _mutated_manifest(data, json.loads(work[1]["edgemed.json"]))
    (root / "edgemed.json").write_text(json.dumps(manifest))
    outcome("load (manifest fields)", lambda: _load_and_predict(root))


@fuzz_settings(200, deadline_s=20)
@given(data=st.data())
def test_manifest_bytes(work, data):
    _restore(work)
    root = work[0]
    raw = data.draw(st.one_of(
        st.builds(lambda d: fs.mutate(work[1]["edgemed.json"], d), st.just(data.draw)),
        st.sampled_from([b"", b"{}", b"[]", b"null", b"\xff\xfe{}", b'{"schema_version": 2}', b"[" * 100_000,
                         b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b'{"schema_version": 1e999}',
                         b'{"schema_version": NaN}', b'{"schema_version": 2, "schema_version": 3}']),
    ))
    (root / "edgemed.json").write_bytes(raw)
    outcome("load (manifest bytes)", lambda: Bundle.open(root))


@fuzz_settings(60, deadline_s=20)
@given(data=st.data())
def test_listed_files_damaged(work, data):
    """A listed file damaged; half the time its size and hash rewritten in the manifest to match, so load gets
    past the hash check and the backend (or the reference reader) meets the damage."""
    _restore(work)
    root, files = work
    name = data.draw(st.sampled_from(["model.onnx", "reference.npz", "samples.npz", "report.json"]))
    damaged = fs.mutate(files[name], data.draw, max_ops=4)
    _CHANGED.add(name)
    (root / name).write_bytes(damaged)
    manifest = json.loads(files["edgemed.json"])
    if data.draw(st.booleans()):
        for record in [a for a in manifest["artifacts"]] + manifest.get("files", []):
            if record["file"] == name:
                record["sha256"], record["bytes"] = hashlib.sha256(damaged).hexdigest(), len(damaged)
        (root / "edgemed.json").write_text(json.dumps(manifest))

    outcome("load (damaged files)", lambda: _load_and_predict(root))

    def verify():  # what `edgemed verify` runs: the passed artifact against the bundle's reference probes
        from edgemed.gate.verify import verify_artifact

        with edgemed.load(root) as pipe:
            return verify_artifact(pipe)

    outcome("verify (damaged files)", verify)
