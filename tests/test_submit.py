"""`rrsis submit` / `rrsis jobs` against a real Ray head (dashboard + job server) on 127.0.0.1.

One head per module (tests/ray_head.py); the test driver never connects to it as a Ray driver, it only
talks HTTP to the job server, exactly like a user's laptop does.
"""

from __future__ import annotations

import http.server
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray_head import RayHead, free_ports, ray_head

from rrsis.cli import main
from rrsis.config.submit import SubmitConfig
from rrsis.errors import JobError
from rrsis.submit import control
from rrsis.submit.connection import auth_headers, check_reachable, resolve_address
from rrsis.submit.package import CONFIG_DIR, job_package

REPO = Path(__file__).resolve().parents[1]
SECRET = f"rrsis-secret-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    # 4 logical CPUs: a map job holds an infer actor and a refine actor while read/write tasks run
    with ray_head(num_cpus=4, resources={"cpu_pool": 4}) as h:
        yield h


@pytest.fixture()
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rrsis-test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return SECRET


def _submit_cfg(tmp_path: Path, **values: object) -> Path:
    path = tmp_path / f"submit-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _client(head: RayHead):  # type: ignore[no-untyped-def]
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.address)


# --- before anything is sent -------------------------------------------------------------------------


def test_dead_address_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], secret_env: str) -> None:
    (port,) = free_ports(1)  # nothing listens there
    code, out, err = _run(capsys, "submit", "map", "--address", f"http://127.0.0.1:{port}", "output=s3://b/runs")
    assert code == 2
    assert err.strip().count("\n") == 0 and "cannot reach the Ray job server" in err
    assert secret_env not in out + err
    assert not (REPO / CONFIG_DIR).exists()  # nothing was staged


@pytest.mark.parametrize(
    ("job", "config", "output"),
    [
        ("map", "configs/map/waterland.yaml", None),  # the shipped `output: outputs`
        ("train", "configs/train/waterland_tiny.yaml", None),  # `output: runs`
        ("tune", "configs/tune/waterland_tiny.yaml", None),  # `output: runs/tune`
        ("eval", "configs/eval/waterland.yaml", "./outputs/eval"),
        ("map", None, "file://outputs"),
    ],
)
def test_relative_output_is_refused_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], job: str, config: str | None, output: str | None
) -> None:
    """Results under a relative path land in Ray's temporary working_dir on the cluster and are deleted with it.

    Nothing listens at the address: the refusal comes before any request (a request would fail to connect).
    """
    (port,) = free_ports(1)
    argv = ["submit", job, "--address", f"http://127.0.0.1:{port}"]
    argv += ["--config", str(REPO / config)] if config else []
    argv += [f"output={output}"] if output else []
    code, out, err = _run(capsys, *argv)
    assert out == ""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" not in err, err
    assert lines[0].startswith("rrsis: output=") and "is a relative local path" in lines[0]
    assert "Ray's temporary working directory on the cluster, deleted when the job ends" in lines[0]
    assert "an absolute path on storage every node shares (output=/shared/rrsis/" in lines[0]
    assert "or an s3:// URI (output=s3://BUCKET/" in lines[0]
    assert not (REPO / CONFIG_DIR).exists()  # nothing was staged
    # an absolute path or an s3:// URI passes the check: then the dead address is what fails
    for good in ("/shared/rrsis/runs", "s3://bucket/runs"):
        code, _, err = _run(capsys, *argv, f"output={good}")
        assert code == 2 and "cannot reach the Ray job server" in err, err


def test_malformed_config_is_one_line_exit_2_and_nothing_sent(
    head: RayHead, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiling:\n  tile_px: 4\n")  # below the allowed 16
    before = len(_client(head).list_jobs())
    code, _, err = _run(capsys, "submit", "map", "--address", head.address, "--config", str(bad))
    assert code == 2
    assert err.strip().count("\n") == 0 and "tiling.tile_px" in err
    # an unknown key, and a dead address: the config is checked first, so the config error is reported
    code, _, err = _run(capsys, "submit", "map", "--address", "http://127.0.0.1:1", "tiling.nope=3")
    assert code == 2 and "unknown key 'tiling.nope'" in err
    assert len(_client(head).list_jobs()) == before


def test_address_order_and_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert resolve_address(None) == "http://10.0.0.5:8265"
    assert resolve_address("https://ray.example.org/") == "https://ray.example.org"
    assert resolve_address(None, "http://cfg:8265") == "http://cfg:8265"
    with pytest.raises(JobError, match="Ray Client address"):
        resolve_address("ray://head:10001")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(JobError, match="no cluster address"):
        resolve_address(None)


def test_auth_token_header_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAY_JOB_HEADERS", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-123")
    assert auth_headers() == {"Authorization": "Bearer tok-123"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    token_file = tmp_path / "auth_token"
    token_file.write_text("tok-from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    monkeypatch.setenv("RAY_JOB_HEADERS", '{"X-Proxy": "p1"}')
    assert auth_headers() == {"X-Proxy": "p1", "Authorization": "Bearer tok-from-file"}
    token_file.write_text("")
    with pytest.raises(JobError, match="token file is empty"):
        auth_headers()


def test_ray_default_token_file_when_no_variable_is_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As Ray's own clients: RAY_AUTH_TOKEN, else RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (if it exists)."""
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_JOB_HEADERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth_headers() == {}  # no file: no header (a cluster without token auth)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("tok-default\n")
    assert auth_headers() == {"Authorization": "Bearer tok-default"}
    other = tmp_path / "other_token"
    other.write_text("tok-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
    assert auth_headers() == {"Authorization": "Bearer tok-path"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-env")
    assert auth_headers() == {"Authorization": "Bearer tok-env"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    (tmp_path / ".ray" / "auth_token").write_text(SECRET)
    seen, server = _refusing_server()
    try:
        with pytest.raises(JobError) as err:
            check_reachable(f"http://127.0.0.1:{server.server_port}", auth_headers(), 5.0)
    finally:
        server.shutdown()
    assert seen == [f"Bearer {SECRET}"]
    message = str(err.value)
    assert f"the token from {tmp_path}/.ray/auth_token was not accepted" in message and SECRET not in message


def _refusing_server() -> tuple[list[str], http.server.HTTPServer]:
    """A job server stand-in that records the Authorization header and answers 401."""
    seen: list[str] = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return seen, server


def test_refused_token_names_the_variable_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, server = _refusing_server()
    try:
        monkeypatch.setenv("RAY_AUTH_TOKEN", SECRET)
        address = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(JobError) as err:
            check_reachable(address, auth_headers(), 5.0)
    finally:
        server.shutdown()
    assert seen == [f"Bearer {SECRET}"]  # the token was sent as a bearer header
    assert "HTTP 401" in str(err.value) and "RAY_AUTH_TOKEN" in str(err.value) and SECRET not in str(err.value)


def test_package_passes_env_by_name_and_cleans_up(tmp_path: Path, secret_env: str) -> None:
    sub = SubmitConfig(working_dir="", job_id="rrsis-unit-1", env_vars=["AWS_SECRET_ACCESS_KEY", "NOT_SET_ANYWHERE"])
    with job_package("eval", "split: val\n", sub) as pkg:
        root = Path(pkg.runtime_env["working_dir"])
        staged = root / CONFIG_DIR / "rrsis-unit-1.yaml"
        assert staged.read_text() == "split: val\n"
        assert (root / "jobs" / "eval.py").read_text() == (REPO / "jobs" / "eval.py").read_text()
        assert pkg.runtime_env["env_vars"] == {"AWS_SECRET_ACCESS_KEY": secret_env}
        assert pkg.entrypoint == f"python jobs/eval.py --config {CONFIG_DIR}/rrsis-unit-1.yaml"
        assert "AWS_SECRET_ACCESS_KEY" in pkg.describe() and secret_env not in pkg.describe()
    assert not staged.exists()
    assert control.scrub(f"x {secret_env} y") == "x *** y"


def test_checkout_mode_stages_the_config_in_the_working_dir_only_while_submitting(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "eval.py").write_text("print('eval')\n")
    sub = SubmitConfig(working_dir=str(tmp_path), job_id="rrsis-unit-2", env_vars=[], python="python3.11")
    with job_package("eval", "split: test\n", sub) as pkg:
        assert pkg.runtime_env["working_dir"] == str(tmp_path.resolve())
        assert ".git" in pkg.runtime_env["excludes"] and ".venv" in pkg.runtime_env["excludes"]
        assert (tmp_path / CONFIG_DIR / "rrsis-unit-2.yaml").read_text() == "split: test\n"
        assert pkg.entrypoint.startswith("python3.11 jobs/eval.py --config ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs"]  # nothing left behind
    with pytest.raises(JobError, match=r"jobs/train\.py not found"):
        with job_package("train", "", sub):
            pass


# --- a real cluster -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_submit_follow_status_logs_and_env_by_name(
    head: RayHead, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, secret_env: str
) -> None:
    job_id = f"rrsis-test-{uuid.uuid4().hex[:8]}"
    # image mode (only the config and the script travel); the checkout mode is exercised by the map test
    sub = _submit_cfg(tmp_path, working_dir="", script="jobs/submit_demo.py", job_id=job_id, poll_s=0.3)
    code, out, err = _run(capsys, "submit", "map", "--address", head.address, "--submit-config", str(sub))
    assert code == 0, err
    assert f"submitted map job {job_id}" in err and f"job {job_id} SUCCEEDED" in err
    assert "config .rrsis-submit/" in out and "submit_demo: ok" in out
    # CPU stages went to the cpu_pool custom resource, infer stayed on CPU (no GPU on this head)
    assert '"resources": {"cpu_pool": 0.001}' in out and 'stage map.infer: {"num_cpus": 1.0' in out
    assert "env passed by name: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in out

    code, out2, _ = _run(capsys, "jobs", "status", job_id, "--address", head.address)
    assert code == 0 and out2.startswith(f"{job_id} SUCCEEDED `python jobs/submit_demo.py --config")
    code, logs, _ = _run(capsys, "jobs", "logs", job_id, "--address", head.address)
    assert code == 0 and "submit_demo: ok" in logs
    code, listing, _ = _run(capsys, "jobs", "list", "--address", head.address)
    assert code == 0 and f"{job_id} SUCCEEDED" in listing

    raw_logs = _client(head).get_job_logs(job_id)  # unscrubbed: the secret never reached any log
    everything = out + err + out2 + logs + listing + caplog.text + raw_logs
    assert secret_env not in everything
    # On the cluster side, only Ray's runtime-env agent records the runtime_env it creates, values included
    # (Ray behaviour, documented in cluster/README.md: use Kubernetes Secrets there). No other log may.
    leaking = {p.name for p in _ray_log_files(head) if secret_env in p.read_text(errors="replace")}
    assert leaking <= {"runtime_env_agent.log"}, leaking


def _ray_log_files(head: RayHead) -> list[Path]:
    """Every log file the head wrote (job driver, supervisor, dashboard, agents)."""
    return [p for p in head.temp_dir.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")]


@pytest.mark.slow
def test_stop_stops_a_running_job(head: RayHead, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = f"rrsis-stop-{uuid.uuid4().hex[:8]}"
    sub = _submit_cfg(
        tmp_path, working_dir="", script="jobs/submit_demo.py", script_args=["--sleep-s", "300"], job_id=job_id
    )
    code, out, _ = _run(capsys, "submit", "map", "--address", head.address, "--submit-config", str(sub), "--no-wait")
    assert code == 0 and out.strip() == job_id
    client = _client(head)
    deadline = time.monotonic() + 60
    while str(client.get_job_status(job_id).value) != "RUNNING":
        assert time.monotonic() < deadline, client.get_job_info(job_id)
        time.sleep(0.3)
    code, out, _ = _run(capsys, "jobs", "stop", job_id, "--address", head.address)
    assert code == 0 and out.strip() == f"{job_id} STOPPED"
    assert str(client.get_job_status(job_id).value) == "STOPPED"
    code, _, err = _run(capsys, "jobs", "status", "rrsis-no-such-job", "--address", head.address)
    assert code == 2 and "no such job" in err


def test_shipped_submit_configs_load() -> None:
    from rrsis.config.load import load_config

    for path in sorted((REPO / "configs" / "submit").glob("*.yaml")):
        cfg = load_config(SubmitConfig, path, None)
        assert cfg.python == "python", path
    assert load_config(SubmitConfig, REPO / "configs" / "submit" / "smoke.yaml", None).script == "jobs/submit_demo.py"


def _tiny_waterland_checkpoint(path: Path) -> str:
    import torch

    from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
    from rrsis.models.config import ModelConfig
    from rrsis.models.registry import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="waterland")
    model = build_model(cfg)
    save_checkpoint(
        checkpoint_from_model(model, cfg, bands=["VV", "VH"], norm_mean=[-10.0, -17.0], norm_std=[4.0, 4.0]), str(path)
    )
    return str(path)


@pytest.mark.slow
def test_submit_map_job_to_s3_and_read_outputs(
    head: RayHead, tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The acceptance path: `rrsis submit map` -> SUCCEEDED -> outputs on S3 -> logs.

    The head has no AWS variables (tests/ray_head.py): the job reaches the S3 server only with the
    credentials and endpoint `rrsis submit` passed by name.
    """
    if not (REPO / "jobs" / "map.py").is_file():
        pytest.skip("jobs/map.py (the map pipeline, issue 6) has not landed in this checkout yet")
    import boto3
    import pyarrow.parquet as pq

    checkpoint = _tiny_waterland_checkpoint(tmp_path / "model.pt")
    scene = REPO / "data" / "samples" / "sen1floods11" / "S1Hand" / "Spain_7370579_S1Hand.tif"
    job_id = f"rrsis-map-{uuid.uuid4().hex[:8]}"
    sub = _submit_cfg(tmp_path, working_dir=str(REPO), job_id=job_id, poll_s=0.5)
    config = REPO / "configs" / "map" / "waterland.yaml"
    argv = ["submit", "map", "--address", head.address, "--submit-config", str(sub)]
    argv += ["--config", str(config)] if config.is_file() else []
    argv += [
        f"input=[{scene}]",
        f"output=s3://{s3_bucket}/runs",
        "run_id=submitted",
        f"infer.checkpoint={checkpoint}",
        "tiling.tile_px=256",
        "tiling.overlap_px=0",
        "outputs.mosaic=false",
        "outputs.vectors=false",
        "outputs.quicklook=false",
    ]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err[-3000:] + out[-3000:]
    assert f"job {job_id} SUCCEEDED" in err
    code, status_line, _ = _run(capsys, "jobs", "status", job_id, "--address", head.address)
    assert code == 0 and status_line.startswith(f"{job_id} SUCCEEDED")

    s3 = boto3.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/submitted/").get("Contents", [])}
    assert {"runs/submitted/manifest.parquet", "runs/submitted/summary.json"} <= keys, keys
    local = tmp_path / "manifest.parquet"
    s3.download_file(s3_bucket, "runs/submitted/manifest.parquet", str(local))
    manifest = pq.read_table(local).to_pylist()
    # a 512 x 512 chip in 256 px tiles without overlap: 2 x 2 = 4 tiles, each once, each written to S3
    tiles = sorted(row["tile_id"] for row in manifest)
    assert tiles == ["r00000_c00000", "r00000_c00001", "r00001_c00000", "r00001_c00001"]
    assert all(row["status"] == "written" for row in manifest)
    assert {row["key"].removeprefix(f"s3://{s3_bucket}/") for row in manifest} <= keys
    code, logs, _ = _run(capsys, "jobs", "logs", job_id, "--address", head.address)
    assert code == 0 and "tiles 4 (4 computed" in logs  # the map summary line, fetched from the cluster
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]  # the s3_endpoint fixture's, passed by name to the job
    assert secret not in out + err + logs + status_line + _client(head).get_job_logs(job_id)
    assert {p.name for p in _ray_log_files(head) if secret in p.read_text(errors="replace")} <= {
        "runtime_env_agent.log"
    }
