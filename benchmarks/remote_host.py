"""``edgemed bench --host user@device``: run the same bench on another machine over ssh.

The bundle is copied to a temporary folder on the device with ``scp``, the device's own
``edgemed bench`` runs there (same options, its own detection and engines), and its JSON report
is copied back, checked, and recorded in the local history like a local run. Extra ssh options
(port, identity file) come from ``EDGEMED_SSH_ARGS``, e.g. ``"-o Port=2222 -i ~/.ssh/jetson"``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from edgemed.errors import EdgemedError

SSH_BASE = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]


def _ssh_args() -> list[str]:
    return SSH_BASE + shlex.split(os.environ.get("EDGEMED_SSH_ARGS", ""))


def _run(cmd: list[str], what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise EdgemedError(f"{cmd[0]} is not installed here", "install the OpenSSH client") from exc
    except subprocess.TimeoutExpired as exc:
        raise EdgemedError(f"{what} timed out after {timeout:.0f} s", "check the device is reachable") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise EdgemedError(f"{what} failed: {last[:300]}", "check --host, ssh keys (EDGEMED_SSH_ARGS) and that "
                                                           "edgemed is installed on the device")
    return proc.stdout


def bench_on_host(host: str, bundle: Path, bench_args: list[str], remote_edgemed: str = "edgemed",
                  timeout: float = 3600) -> dict:
    """Copy the bundle, run ``edgemed bench`` on ``host``, return its JSON report (with where it ran)."""
    ssh = ["ssh", *_ssh_args(), host]
    remote_dir = _run(ssh + ["mktemp -d /tmp/edgemed-bench.XXXXXX"], f"ssh {host}", 60).strip()
    if not remote_dir.startswith("/tmp/edgemed-bench."):
        raise EdgemedError(f"unexpected answer from {host}: {remote_dir[:80]!r}", "check the remote shell")
    try:
        _run(["scp", *_ssh_args(), "-q", "-r", str(bundle), f"{host}:{remote_dir}/bundle"], "copying the bundle",
             timeout)
        command = " ".join(shlex.quote(x) for x in [remote_edgemed, "bench", f"{remote_dir}/bundle", *bench_args,
                                                    "--json", f"{remote_dir}/report.json", "--no-history"])
        _run(ssh + [command], f"edgemed bench on {host}", timeout)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "report.json"
            _run(["scp", *_ssh_args(), "-q", f"{host}:{remote_dir}/report.json", str(local)], "fetching the report",
                 300)
            report = json.loads(local.read_text())
    finally:
        subprocess.run(ssh + [f"rm -rf {shlex.quote(remote_dir)}"], capture_output=True, timeout=60)
    from .run import SCHEMA

    if report.get("schema") != SCHEMA:
        raise EdgemedError(f"{host} returned a report of schema {report.get('schema')!r}",
                           "install the same edgemed version on the device")
    report["host"] = host
    report["bundle"] = str(bundle)
    report["device"] = f"{report['device']}@{host}"  # history keeps remote runs apart from local ones
    return report
