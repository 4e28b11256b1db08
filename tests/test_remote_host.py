"""edgemed bench --host against a real OpenSSH server on loopback, started by the test."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgemed.benchmarks.history import History


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    daemon = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(daemon).exists() or not shutil.which("ssh-keygen"):
        pytest.skip("OpenSSH server not installed (.ci/run installs openssh-server)")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\n"
        f"AuthorizedKeysFile {tmp_path / 'user.pub'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nPermitRootLogin yes\nStrictModes no\nUsePAM no\nPidFile {tmp_path / 'pid'}\n"
        "Subsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([daemon, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {proc.stderr.read() if proc.stderr else ''}")
    args = (f"-o Port={port} -i {tmp_path / 'user'} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o LogLevel=ERROR")
    yield f"{getpass.getuser()}@127.0.0.1", args
    proc.terminate()
    proc.wait(timeout=10)


def test_bench_over_ssh_comes_back_into_local_history(sshd, cnn_bundle, tmp_path, monkeypatch):
    host, args = sshd
    monkeypatch.setenv("EDGEMED_SSH_ARGS", args)
    remote_edgemed = str(Path(sys.executable).parent / "edgemed")
    db = tmp_path / "h.sqlite"
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "bench", str(cnn_bundle), "--host", host,
                           "--remote-edgemed", remote_edgemed, "--runs", "20", "--warmup", "2", "--history", str(db),
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime/fp32" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["host"] == host and report["device"] == f"cpu@{host}"
    runs = History(db).runs()
    assert len(runs) == 1 and runs[0]["device"] == f"cpu@{host}"


def test_unreachable_host_is_one_line(cnn_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEMED_SSH_ARGS", f"-o Port={_free_port()} -o ConnectTimeout=3")
    proc = subprocess.run([sys.executable, "-m", "edgemed.cli", "bench", str(cnn_bundle), "--host", "nobody@127.0.0.1",
                           "--no-history"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgemed: error: ssh nobody@127.0.0.1 failed")
