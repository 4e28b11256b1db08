"""Fleet updates against a real TUF repository served over HTTP on loopback: publish, update with a canary,
rollback, the runtime's trial, and the attacks of issue 24 (tampered, wrong key, replayed, frozen, truncated,
a failing canary, SIGKILL mid-install). Each attack asserts what the device did: refused with one line
naming the problem, and still serving the previous complete, verified version."""

from __future__ import annotations

import functools
import http.server
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import msgspec
import numpy as np
import pytest

pytest.importorskip("tuf")

from edgemed import load  # noqa: E402
from edgemed.bundle import Bundle  # noqa: E402
from edgemed.device_pointer import Pointer, serving_bundle  # noqa: E402
from edgemed.errors import EdgemedError  # noqa: E402
from edgemed.fleet.client import UpdateRefused  # noqa: E402
from edgemed.fleet.repository import FileRepository, RepositoryError, init_repository, publish, rotate  # noqa: E402
from edgemed.fleet.slots import PAUSE_ENV  # noqa: E402
from edgemed.fleet.update import rollback, update  # noqa: E402
from edgemed.gate.verify import verify_artifact  # noqa: E402
from edgemed.hashing import sha256_file  # noqa: E402
from edgemed.manifest import FileRecord, Manifest  # noqa: E402
from edgemed.samples import shipped_model  # noqa: E402
from edgemed.signing_keys import generate_keypair  # noqa: E402

from .conftest import SHARED, convert_shipped, samples_dir  # noqa: E402

FRAMES = samples_dir("breastmnist")  # the device's reference frames (grey BreastMNIST test images)
EDGEMED = [sys.executable, "-m", "edgemed.cli"]


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("root", "targets", "online", "attacker", "targets2"):
        generate_keypair(folder / f"{name}.pem")
        out[name] = folder / f"{name}.pem"
    return out


@pytest.fixture(scope="module")
def v2_bundle(tmp_path_factory) -> Path:
    """A second conversion of the shipped classifier, now with an INT8 artifact beside FP32 (calibrated on
    BreastMNIST train images, judged on its 156 test images against a budget those can decide: the default
    agreement>=0.999 needs thousands of cases, and an uncertified INT8 is rightly refused by the canary)."""
    from edgemed.gate.verdict import Budget

    return convert_shipped("cnn_breastmnist", tmp_path_factory.mktemp("v2") / "b", precisions=("fp32", "int8"),
                           calib=SHARED / "breastmnist.npz", calib_key="train_images", calib_count=64,
                           eval=SHARED / "breastmnist.npz", eval_key="test_images",
                           budget=Budget.parse("agreement>=0.95", "classification"))


@pytest.fixture(scope="module")
def grey_only_bundle(tmp_path_factory) -> Path:
    """The classifier converted without the to_gray step: grey frames work, a colour frame is refused."""
    spec = tuple(op for op in shipped_model("cnn_breastmnist")[1]["preprocess"] if op["op"] != "to_gray")
    return convert_shipped("cnn_breastmnist", tmp_path_factory.mktemp("grey") / "b", preprocess=spec)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path, keys):
    """An initialised TUF repository served by http.server on a free loopback port; stopped after."""
    repo = tmp_path / "repo"
    init_repository(repo, [keys["root"]], {"targets": [keys["targets"]], "snapshot": [keys["online"]],
                                           "timestamp": [keys["online"]]})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(repo)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield repo, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _publish(repo: Path, keys, bundle: Path, version: str, **kw):
    return publish(bundle, repo, [keys["targets"], keys["online"]], version, **kw)


def _update(url: str, dev: Path, repo: Path | None = None, **kw):
    root = repo / "metadata" / "1.root.json" if repo is not None else None
    return update(url, dev, root=root, **kw)


def _installed_v1(served, keys, cnn_bundle, tmp_path) -> Path:
    repo, url = served
    _publish(repo, keys, cnn_bundle, "1.0.0")
    dev = tmp_path / "device"
    result = _update(url, dev, repo, canary=FRAMES)
    assert result.serving == "1.0.0" and result.changed
    return dev


def assert_serves(dev: Path, version: str) -> None:
    """The pointer names ``version``, its slot verifies, it loads and passes self-verification, and nothing
    half-installed is left beside it."""
    assert Pointer.read(dev).current == version
    Bundle.open(serving_bundle(dev))
    with load(dev) as pipe:
        assert verify_artifact(pipe).passed
        assert pipe.predict(next(iter(sorted(FRAMES.glob("*.png"))))).label
    assert not list((dev / "slots").glob(".*partial*")), "a half-installed slot was left"
    assert not list((dev / "downloads").glob("*")) if (dev / "downloads").exists() else True


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


# -- the sequence the README shows ------------------------------------------------------------
def test_publish_update_rollback_on_the_command_line(served, keys, cnn_bundle, v2_bundle, tmp_path):
    repo, url = served
    dev = tmp_path / "device"

    def cli(*args, ok=True):
        proc = subprocess.run([*EDGEMED, *map(str, args)], capture_output=True, text=True, timeout=300)
        assert (proc.returncode == 0) == ok, proc.stderr
        if not ok:
            assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()[-1:]) == 1
        return proc

    cli("publish", cnn_bundle, "--repo", repo, "--key", keys["targets"], "--key", keys["online"], "--version", "1.0.0")
    out = cli("update", "--repo", url, "--into", dev, "--root", repo / "metadata" / "root.json", "--canary", FRAMES)
    assert "1.0.0 serves now" in out.stdout
    cli("publish", v2_bundle, "--repo", repo, "--key", keys["targets"], "--key", keys["online"], "--version", "2.0.0")
    out = cli("update", "--repo", url, "--into", dev, "--precision", "int8")  # the runtime serves INT8
    assert "2.0.0 serves now (previous: 1.0.0" in out.stdout
    assert "canary: serves model.int8.onnx (onnxruntime/int8, passed at conversion)" in out.stderr
    assert "self-verification on the bundle's reference probes" in out.stderr
    # the gate's rule for this artifact, on the device's own 8 frames against the new FP32 artifact
    assert "against the new FP32 reference on this device's 8 reference frames: agreement" in out.stderr
    assert "answers changed from the previous version on the same 8 frames: agreement" in out.stderr
    assert_serves(dev, "2.0.0")
    assert cli("update", "--repo", url, "--into", dev).stdout.strip().endswith("up to date")
    assert cli("rollback", "--into", dev).stdout.strip() == "serving 1.0.0 again"
    assert_serves(dev, "1.0.0")
    assert sorted(p.name for p in (dev / "slots").iterdir()) == ["1.0.0"]
    # the version that was rolled back is not installed again by the next update
    err = cli("update", "--repo", url, "--into", dev, ok=False).stderr
    assert "2.0.0 was rolled back on this device" in err
    # publishing an older or the same version is refused at the repository already
    err = cli("publish", cnn_bundle, "--repo", repo, "--key", keys["targets"], "--key", keys["online"],
              "--version", "1.5", ok=False).stderr
    assert "not above the newest published version 2.0.0" in err
    cli("publish", v2_bundle, "--repo", repo, "--key", keys["targets"], "--key", keys["online"], "--version", "2.1")
    assert "2.1 serves now (previous: 1.0.0" in cli("update", "--repo", url, "--into", dev).stdout
    events = [json.loads(line)["event"] for line in (dev / "update.log").read_text().splitlines()]
    assert events.count("switched") == 3 and "rolled_back" in events and "refused" in events


def test_target_metadata_says_what_it_is(served, keys, cnn_bundle):
    repo, _ = served
    target = _publish(repo, keys, cnn_bundle, "1.0.0")
    info = target.custom["edgemed"]
    assert info["model"] == "cnn_breastmnist" and info["version"] == "1.0.0" and info["task"] == "classification"
    assert info["verdicts"] == {"onnxruntime/fp32": "passed"} and info["edgemed_version"]
    assert info["manifest_sha256"] == Bundle.open(cnn_bundle).manifest_sha256()
    stored = repo / "targets" / "cnn_breastmnist" / f"{target.hashes['sha256']}.1.0.0.tar"
    assert stored.stat().st_size == target.length
    # publishing the same bundle again gives the same bytes (a reproducible archive)
    again = _publish(repo, keys, cnn_bundle, "1.0.1")
    assert again.hashes == target.hashes


# -- attacks ----------------------------------------------------------------------------------
def test_tampered_target_is_refused(served, keys, cnn_bundle, v2_bundle, tmp_path):
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    target = _publish(repo, keys, v2_bundle, "2.0.0")
    stored = repo / "targets" / "cnn_breastmnist" / f"{target.hashes['sha256']}.2.0.0.tar"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same length
    stored.write_bytes(bytes(data))
    with pytest.raises(UpdateRefused, match="does not match its signed length and hashes") as err:
        _update(url, dev)
    _one_line(err.value)
    assert_serves(dev, "1.0.0")


def test_truncated_download_is_refused(served, keys, cnn_bundle, v2_bundle, tmp_path):
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    target = _publish(repo, keys, v2_bundle, "2.0.0")
    stored = repo / "targets" / "cnn_breastmnist" / f"{target.hashes['sha256']}.2.0.0.tar"
    stored.write_bytes(stored.read_bytes()[: target.length // 3])
    with pytest.raises(UpdateRefused, match="does not match its signed length and hashes") as err:
        _update(url, dev)
    assert f"does not match expected length {target.length}" in _one_line(err.value)
    assert_serves(dev, "1.0.0")


def _forge_targets(repo: Path, signer_key: Path, bundle: Path, version: str, online: Path) -> None:
    """What a compromised server holding only the online keys can do: add a target signed by a key of its
    own, and sign fresh snapshot and timestamp metadata for it with the (genuine) online key."""
    from tuf.api.metadata import TargetFile

    from edgemed.fleet.archive import pack
    from edgemed.fleet.keys import signer
    from edgemed.fleet.repository import custom_metadata, target_name

    tar = repo / "forged.tar"
    pack(bundle, tar)
    target = TargetFile.from_file(target_name("cnn_breastmnist", version), str(tar), ["sha256"])
    target.unrecognized_fields["custom"] = {"edgemed": custom_metadata(Bundle.open(bundle), version)}
    folder = repo / "targets" / "cnn_breastmnist"
    os.replace(tar, folder / f"{target.hashes['sha256']}.{version}.tar")
    server = FileRepository(repo, [online])
    md = server.open("targets")
    md.signed.targets[target.path] = target
    md.signed.version += 1
    md.signatures.clear()
    md.sign(signer(signer_key))
    (repo / "metadata" / f"{md.signed.version}.targets.json").write_bytes(md.to_bytes())
    server._cache["targets"] = md
    server.do_snapshot()
    server.do_timestamp()


def test_target_signed_by_the_wrong_key_is_refused(served, keys, cnn_bundle, v2_bundle, tmp_path):
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    # the repository refuses to publish with a key root does not list for targets
    before = sorted((repo / "targets").rglob("*"))
    with pytest.raises(RepositoryError, match="targets role needs 1 signature"):
        publish(v2_bundle, repo, [keys["attacker"], keys["online"]], "2.0.0")
    assert sorted((repo / "targets").rglob("*")) == before  # refused before anything was written
    _forge_targets(repo, keys["attacker"], v2_bundle, "2.0.0", keys["online"])
    with pytest.raises(UpdateRefused, match="not signed by the keys this device trusts") as err:
        _update(url, dev)
    assert "targets was signed by 0/1 keys" in _one_line(err.value)
    assert_serves(dev, "1.0.0")


def test_replayed_old_repository_is_refused(served, keys, cnn_bundle, v2_bundle, tmp_path):
    """Rollback attack: the server goes back to an older, validly signed state of the repository."""
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    old_state = tmp_path / "old-state"
    shutil.copytree(repo, old_state)
    _publish(repo, keys, v2_bundle, "2.0.0")
    assert _update(url, dev).serving == "2.0.0"
    shutil.rmtree(repo / "metadata")
    shutil.copytree(old_state / "metadata", repo / "metadata")
    with pytest.raises(UpdateRefused, match="older metadata than this device has already seen") as err:
        _update(url, dev)
    assert "timestamp version" in _one_line(err.value)
    assert_serves(dev, "2.0.0")


def test_downgrade_only_when_asked(served, keys, cnn_bundle, v2_bundle, tmp_path):
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, v2_bundle, "2.0.0")
    assert _update(url, dev).serving == "2.0.0"
    with pytest.raises(UpdateRefused, match="pass --allow-downgrade"):
        _update(url, dev, version="1.0.0")
    assert _update(url, dev, version="1.0.0", allow_downgrade=True).serving == "1.0.0"
    assert_serves(dev, "1.0.0")


def test_expired_timestamp_is_refused(served, keys, cnn_bundle, v2_bundle, tmp_path):
    """Freeze attack: the server keeps offering a timestamp whose time has passed."""
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, v2_bundle, "2.0.0", expiry={"timestamp": timedelta(seconds=-60)})
    with pytest.raises(UpdateRefused, match="expired metadata from the repository") as err:
        _update(url, dev)
    assert "timestamp.json is expired" in _one_line(err.value)
    assert_serves(dev, "1.0.0")


def _break_self_verification(bundle: Path, out: Path) -> Path:
    """A bundle whose stored conversion-time outputs its artifact does not reproduce (as when the device's
    backend computes something else): consistent hashes, publishable, and it must fail its canary."""
    shutil.copytree(bundle, out)
    with np.load(out / "reference.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["artifact:model.onnx"] = arrays["artifact:model.onnx"] + np.float32(0.5)
    np.savez(out / "reference.npz", **arrays)
    m = Manifest.from_json((out / "edgemed.json").read_bytes())
    files = [FileRecord(file=f.file, sha256=sha256_file(out / f.file), bytes=(out / f.file).stat().st_size)
             if f.file == "reference.npz" else f for f in m.files]
    (out / "edgemed.json").write_bytes(msgspec.structs.replace(m, files=files).to_json())
    Bundle.open(out)
    return out


def test_failing_canary_is_refused(served, keys, cnn_bundle, v2_bundle, tmp_path):
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, _break_self_verification(v2_bundle, tmp_path / "broken"), "2.0.0")
    with pytest.raises(UpdateRefused, match="2.0.0 failed its canary: self-verification failed") as err:
        _update(url, dev)
    assert "keeps serving 1.0.0" in _one_line(err.value)
    assert_serves(dev, "1.0.0")
    assert sorted(p.name for p in (dev / "slots").iterdir()) == ["1.0.0"]
    assert json.loads((dev / "update.log").read_text().splitlines()[-1])["stage"] == "canary"


def test_canary_on_the_devices_own_frames(served, keys, cnn_bundle, grey_only_bundle, tmp_path):
    """The device's stored frames are colour: the version that cannot read colour is refused."""
    from PIL import Image

    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    colour = tmp_path / "colour"
    colour.mkdir()
    for i, png in enumerate(sorted(FRAMES.glob("*.png"))):
        Image.open(png).convert("RGB").save(colour / f"{i}.png")
    _publish(repo, keys, grey_only_bundle, "2.0.0")
    with pytest.raises(UpdateRefused, match="the device's reference frames do not run through it") as err:
        _update(url, dev, canary=colour)
    assert "3 channel(s)" in _one_line(err.value)
    assert_serves(dev, "1.0.0")


STAGES = ["refreshed", "downloaded", "unpacked", "installed", "canary", "switched"]


def _kill_at(stage: str, url: str, dev: Path) -> None:
    proc = subprocess.Popen([*EDGEMED, "update", "--repo", url, "--into", str(dev)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, bufsize=0, env={**os.environ, PAUSE_ENV: stage})
    deadline = time.monotonic() + 120
    seen = b""
    try:
        while f"paused at {stage}".encode() not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, f"never reached {stage}: {seen.decode()}"
            if select.select([proc.stderr], [], [], 1.0)[0]:
                seen += os.read(proc.stderr.fileno(), 65536)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


def test_sigkill_mid_install_always_leaves_a_working_version(served, keys, cnn_bundle, v2_bundle, tmp_path):
    """SIGKILL at every stage of an update: the device serves a complete, verified version (the old one
    before the switch, the new one after), and the next update recovers and finishes."""
    repo, url = served
    template = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, v2_bundle, "2.0.0")
    for stage in STAGES:
        dev = tmp_path / f"device-{stage}"
        shutil.copytree(template, dev)
        _kill_at(stage, url, dev)
        assert_serves_after_kill = "2.0.0" if stage == "switched" else "1.0.0"
        assert Pointer.read(dev).current == assert_serves_after_kill, stage
        with load(dev) as pipe:  # loads and self-verifies as it is, before any recovery
            assert verify_artifact(pipe).passed
        result = _update(url, dev)
        assert result.serving == "2.0.0", stage
        assert_serves(dev, "2.0.0")
        assert sorted(p.name for p in (dev / "slots").iterdir()) == ["1.0.0", "2.0.0"], stage


# -- the runtime: swaps, trial, rollback by itself -----------------------------------------------
def _frames() -> list[np.ndarray]:
    from edgemed.io.images import read_image

    return [read_image(p) for p in sorted(FRAMES.glob("*.png"))]


def test_runtime_swaps_engines_between_frames_without_dropping_any(served, keys, cnn_bundle, v2_bundle, tmp_path):
    from edgemed.fleet.watch import DeviceRuntime

    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, v2_bundle, "2.0.0")
    frames, sent, served_by, results = _frames(), [], [], []

    def source(runtime):
        """A live source: the update lands after 20 frames; frames keep coming until 20 after the swap."""
        deadline, after = time.monotonic() + 60, 0
        while after < 20 and time.monotonic() < deadline:
            if len(sent) == 20:
                assert _update(url, dev, trial=0).serving == "2.0.0"
            after += runtime.version == "2.0.0"
            time.sleep(0.01)
            sent.append(frames[len(sent) % len(frames)])
            yield sent[-1]

    with DeviceRuntime(dev, poll_s=0.05) as runtime:
        for result in runtime.stream(source(runtime)):
            results.append(result.label)
            served_by.append(runtime.version)
    assert len(results) == len(sent) > 40
    assert served_by[0] == "1.0.0" and served_by[-1] == "2.0.0"
    switch = served_by.index("2.0.0")
    assert switch >= 20 and set(served_by[switch:]) == {"2.0.0"}
    assert "swapped 1.0.0 -> 2.0.0 between frames" in runtime.events
    # FP32 serves in both versions, the same model: every frame answered, and answered as the bundle answers
    with load(cnn_bundle) as pipe:
        assert results == [pipe.predict(f).label for f in sent]


def test_a_version_failing_its_trial_rolls_back_by_itself(served, keys, cnn_bundle, grey_only_bundle, tmp_path):
    from edgemed.fleet.watch import DeviceRuntime

    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, grey_only_bundle, "2.0.0")
    assert _update(url, dev, trial=10).serving == "2.0.0"  # its canary on grey frames passes
    frames = _frames()
    colour = np.repeat(frames[0][..., None], 3, axis=-1) if frames[0].ndim == 2 else frames[0]
    with DeviceRuntime(dev) as runtime:
        assert runtime.version == "2.0.0" and runtime.left == 10
        for f in frames[:3]:
            runtime.predict(f)
        result = runtime.predict(colour)  # 2.0.0 cannot read a colour frame; 1.0.0 answers it
        assert result.label == load(cnn_bundle).predict(colour).label
        assert runtime.version == "1.0.0"
        runtime.predict(colour)
    pointer = Pointer.read(dev)
    assert pointer.current == "1.0.0" and "failed a prediction the previous version answered" in \
        pointer.rolled_back["2.0.0"]
    assert_serves(dev, "1.0.0")
    with pytest.raises(UpdateRefused, match="was rolled back on this device"):
        _update(url, dev)


def test_a_version_passing_its_trial_is_committed(served, keys, cnn_bundle, v2_bundle, tmp_path):
    from edgemed.fleet.watch import DeviceRuntime

    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, v2_bundle, "2.0.0")
    _update(url, dev, trial=3)
    with DeviceRuntime(dev) as runtime:
        for f in _frames()[:4]:
            runtime.predict(f)
    assert Pointer.read(dev).trial is None and Pointer.read(dev).current == "2.0.0"
    assert "committed 2.0.0 after its trial" in runtime.events


def test_a_version_that_keeps_dying_rolls_back_by_itself(served, keys, cnn_bundle, v2_bundle, tmp_path):
    """A runtime killed before the trial ends, again and again (a crash loop): the next start rolls back."""
    from edgemed.fleet.watch import MAX_STARTS, DeviceRuntime

    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    _publish(repo, keys, v2_bundle, "2.0.0")
    _update(url, dev, trial=5)
    script = ("import os, signal, sys; from edgemed.fleet.watch import DeviceRuntime; "
              "r = DeviceRuntime(sys.argv[1]); print(r.version, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    for _ in range(MAX_STARTS):
        out = subprocess.run([sys.executable, "-c", script, str(dev)], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "2.0.0" and out.returncode == -signal.SIGKILL
    with DeviceRuntime(dev) as runtime:
        assert runtime.version == "1.0.0"
    assert "without finishing its trial" in Pointer.read(dev).rolled_back["2.0.0"]
    assert_serves(dev, "1.0.0")


# -- keys ---------------------------------------------------------------------------------------
def test_targets_key_rotation(served, keys, cnn_bundle, v2_bundle, tmp_path):
    """The publisher's key is replaced (say it leaked): devices follow the new root; the old key is refused."""
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    assert rotate(repo, "targets", add=[keys["targets2"].with_suffix(".pub")], remove=[keys["targets"]],
                  keys=[keys["root"], keys["targets2"], keys["online"]]) == 2
    with pytest.raises(RepositoryError, match="targets role needs 1 signature"):
        publish(v2_bundle, repo, [keys["targets"], keys["online"]], "2.0.0")
    _forge_targets(repo, keys["targets"], v2_bundle, "2.0.0", keys["online"])  # the leaked key, used anyway
    with pytest.raises(UpdateRefused, match="not signed by the keys this device trusts"):
        _update(url, dev)
    assert_serves(dev, "1.0.0")
    publish(v2_bundle, repo, [keys["targets2"], keys["online"]], "2.1.0")
    assert _update(url, dev).serving == "2.1.0"
    assert (dev / "tuf" / "root_history" / "2.root.json").is_file()


def test_unprovisioned_device_and_wrong_root(served, keys, cnn_bundle, tmp_path):
    repo, url = served
    _publish(repo, keys, cnn_bundle, "1.0.0")
    with pytest.raises(EdgemedError, match="never provisioned"):
        update(url, tmp_path / "dev")
    other = tmp_path / "other-repo"
    init_repository(other, [keys["attacker"]], {r: [keys["attacker"]] for r in ("targets", "snapshot", "timestamp")})
    with pytest.raises(UpdateRefused, match="not signed by the keys this device trusts"):
        update(url, tmp_path / "dev2", root=other / "metadata" / "root.json")
    assert not (tmp_path / "dev2" / "current.json").exists()
    # a root that did not verify the repository was not kept: the right one provisions the device
    assert update(url, tmp_path / "dev2", root=repo / "metadata" / "root.json").serving == "1.0.0"
    with pytest.raises(EdgemedError, match="provisioned with another root.json"):
        update(url, tmp_path / "dev2", root=other / "metadata" / "root.json")
    with pytest.raises(EdgemedError, match="not an http:// or https:// URL"):
        update(str(repo), tmp_path / "dev2")
    with pytest.raises(EdgemedError, match="not a device folder"):
        rollback(tmp_path / "no-device")
    assert not (tmp_path / "no-device").exists()


def test_a_damaged_installed_version_is_replaced(served, keys, cnn_bundle, v2_bundle, tmp_path):
    """The serving slot is damaged on disk (a bad sector, a careless hand): the next update goes back to the
    previous version first (or, with none, drops the damaged one), then installs the newest again."""
    repo, url = served
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    with open(dev / "slots" / "1.0.0" / "model.onnx", "r+b") as f:
        f.write(b"\0" * 16)
    result = _update(url, dev)
    assert result.serving == "1.0.0" and any("no longer verifies" in line for line in result.recovered)
    assert_serves(dev, "1.0.0")
    _publish(repo, keys, v2_bundle, "2.0.0")
    assert _update(url, dev).serving == "2.0.0"
    (dev / "slots" / "2.0.0" / "model.onnx").write_bytes(b"broken")
    result = _update(url, dev)  # recovery goes back to 1.0.0 first; the damaged copy, not the version, was bad
    assert any("rolled back to 1.0.0" in line for line in result.recovered)
    assert result.installed == "1.0.0" and result.serving == "2.0.0"
    assert_serves(dev, "2.0.0")


def test_load_follows_the_device_pointer_without_fleet_libraries(served, keys, cnn_bundle, tmp_path):
    dev = _installed_v1(served, keys, cnn_bundle, tmp_path)
    code = ("import sys, edgemed; p = edgemed.load(sys.argv[1]); "
            "print(p.bundle.path.name, p.predict(sys.argv[2]).label); "
            "print(sorted(m for m in ('tuf', 'cyclonedx', 'torch', 'onnx', 'securesystemslib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(dev), str(sorted(FRAMES.glob("*.png"))[0])],
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0].startswith("1.0.0 ") and out[1] == "[]"
    rollback_error = pytest.raises(EdgemedError, match="no previous version to roll back to")
    with rollback_error:
        rollback(dev)


# -- what is in it ------------------------------------------------------------------------------
def test_sbom_is_a_valid_cyclonedx_1_6_ml_bom(v2_bundle, tmp_path):
    from importlib.metadata import version as installed

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    out = tmp_path / "bom.json"
    subprocess.run([*EDGEMED, "sbom", str(v2_bundle), "-o", str(out), "--version", "2.0.0"], check=True,
                   capture_output=True, timeout=120)
    text = out.read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(text) is None
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    model = doc["metadata"]["component"]
    assert (model["type"], model["name"], model["version"]) == ("machine-learning-model", "cnn_breastmnist", "2.0.0")
    card = model["modelCard"]
    assert card["modelParameters"]["task"] == "classification"
    assert "malignant" in card["modelParameters"]["outputs"][0]["format"]
    assert any("BreastMNIST" in d["name"] for d in card["modelParameters"]["datasets"])
    metrics = card["quantitativeAnalysis"]["performanceMetrics"]
    assert {"type": "gate verdict", "value": "passed"}.items() <= metrics[0].items()
    assert any(m["type"] == "test accuracy" for m in metrics)
    assert card["considerations"]["technicalLimitations"]
    m = Bundle.open(v2_bundle).manifest
    listed = {f.file: f.sha256 for a in m.artifacts for f in a.files()} | {f.file: f.sha256 for f in m.files}
    files = {c["name"]: c["hashes"][0]["content"] for c in doc["components"] if c["type"] == "file"}
    assert files == listed
    libraries = {c["name"]: c["version"] for c in doc["components"] if c["type"] == "library"}
    assert libraries["onnxruntime"] == installed("onnxruntime") and libraries["numpy"] == installed("numpy")
    depends = {d["ref"]: set(d.get("dependsOn", [])) for d in doc["dependencies"]}
    assert {f"file:{name}" for name in listed} | {"pypi:edgemed"} <= depends["model"]
    assert all("pypi:onnxruntime" in depends[f"file:{a.file}"] for a in m.artifacts)
    # the validation is real: a model card the schema does not allow is caught by the same validator
    card["modelParameters"]["approach"] = {"type": "guesswork"}
    assert validator.validate_str(json.dumps(doc)) is not None


def test_hostile_archives_are_refused(tmp_path):
    import tarfile

    from edgemed.errors import BundleError
    from edgemed.fleet.archive import unpack

    def archive(name: str, add) -> Path:
        path = tmp_path / f"{name}.tar"
        with tarfile.open(path, "w") as tar:
            add(tar)
        return path

    def escape(tar):
        info = tarfile.TarInfo("../outside.txt")
        info.size = 0
        tar.addfile(info)

    def link(tar):
        info = tarfile.TarInfo("edgemed.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)

    for name, add, why in (("escape", escape, "outside the bundle"), ("link", link, "not a regular file")):
        dest = tmp_path / name
        dest.mkdir()
        with pytest.raises(BundleError, match=why):
            unpack(archive(name, add), dest)
    assert not (tmp_path / "outside.txt").exists()
