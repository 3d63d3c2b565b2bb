"""A real Ray head with the dashboard/job server on 127.0.0.1, as its own process group, for submit tests.

Separate from the session's `ray_session` (the test driver never connects to it): its own temp dir and
free ports for every listener, and it is killed by process group (never `ray stop`, which would stop
every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class RayHead:
    address: str  # http://127.0.0.1:<dashboard port>
    gcs_address: str
    temp_dir: Path
    log: Path


def head_env() -> dict[str, str]:
    """The head's environment: no auth, loopback only, and none of the test's AWS variables.

    Without the AWS variables a job can only see object-storage credentials that `rrsis submit` passed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS", "RAY_API_SERVER"))}
    env.update(
        {
            "RAY_AUTH_MODE": "disabled",
            # Linux default resolves 127.0.0.1 to the routable IP; this keeps every listener on loopback
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def _start(
    temp_dir: Path, num_cpus: int, resources: dict[str, float] | None
) -> tuple[subprocess.Popen[bytes], int, int]:
    gcs, dash, client, agent, agent_grpc, rt_env, metrics, nm, om = free_ports(9)
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
        f"--port={gcs}", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}",
        f"--node-manager-port={nm}", f"--object-manager-port={om}",
        "--min-worker-port=0", "--max-worker-port=0",  # workers: any free port the OS gives
        f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}", "--num-gpus=0",
        f"--resources={json.dumps(resources or {})}",
    ]  # fmt: skip
    with open(temp_dir / "head.log", "ab") as out:
        proc = subprocess.Popen(cmd, env=head_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, gcs, dash


def _wait_up(proc: subprocess.Popen[bytes], address: str, deadline: float) -> bool:
    """True once the job server answers; False if the head process exited first (e.g. a port got taken)."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.5)
    return False


@contextmanager
def ray_head(
    num_cpus: int = 2, resources: dict[str, float] | None = None, timeout_s: float = 120.0
) -> Iterator[RayHead]:
    temp_dir = Path(tempfile.mkdtemp(prefix="rrh"))  # short: Ray's socket paths must stay < 108 bytes
    log = temp_dir / "head.log"
    deadline = time.monotonic() + timeout_s
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _attempt in range(3):  # free ports can be taken between choosing and binding: retry with new ones
            proc, gcs, dash = _start(temp_dir, num_cpus, resources)
            procs.append(proc)
            address = f"http://127.0.0.1:{dash}"
            if _wait_up(proc, address, deadline):
                break
            _kill_group(proc)
        else:
            raise RuntimeError(f"ray head did not come up; see {log}:\n{log.read_text()[-2000:]}")
        yield RayHead(address=address, gcs_address=f"127.0.0.1:{gcs}", temp_dir=temp_dir, log=log)
    finally:
        for proc in procs:
            _kill_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the head's process group, SIGKILL what is left after a short grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
