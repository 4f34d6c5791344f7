"""The OpenShift manifests and the Containerfile agree with each other and with the server.

A mismatch here (a selector that selects nothing, a probe on a path the server does not serve,
a Route timeout that drops sockets after 30 s) only shows up on the cluster, minutes into a
rollout; these checks catch it in CI instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from server.cli import build_parser
from server.config import DEFAULT_PORT
from server.http_api import HTTP_PATHS

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
OPENSHIFT = ROOT / "openshift"
CONTAINERFILE = ROOT / "Containerfile"
APP = "eeict-stream"
# Kept out of kustomization.yaml on purpose: run on demand with `oc create -f`.
ON_DEMAND = {"job-process-demos.yaml"}
# /readyz fails while recordings load and while draining; /healthz only says the process is up.
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
# The server exits at most this long after SIGTERM.
SERVER_DRAIN_SECONDS = 10
# Kubernetes version whose schemas validate the standard kinds (OpenShift 4.17).
KUBERNETES_VERSION = "1.30.0"

Manifest = dict[str, Any]


def _load(name: str) -> Manifest:
    documents = [d for d in yaml.safe_load_all((OPENSHIFT / name).read_text()) if d is not None]
    assert len(documents) == 1, f"{name}: one document per file"
    return documents[0]


MANIFEST_FILES = sorted(p.name for p in OPENSHIFT.glob("*.yaml") if p.name != "kustomization.yaml")
MANIFESTS = {name: _load(name) for name in MANIFEST_FILES}
# Kinds the Kubernetes JSON schemas cover; the OpenShift ones get hand-written checks below.
STANDARD_FILES = [
    n for n, m in MANIFESTS.items() if not m["apiVersion"].endswith(".openshift.io/v1")
]


def _one(kind: str) -> Manifest:
    found = [m for m in MANIFESTS.values() if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod_spec(kind: str) -> Manifest:
    return _one(kind)["spec"]["template"]["spec"]


def _container(kind: str) -> Manifest:
    containers = _pod_spec(kind)["containers"]
    assert len(containers) == 1
    return containers[0]


def _haproxy_seconds(value: str) -> float:
    """An HAProxy duration ("90s", "1h", "500" = ms) in seconds."""
    match = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value)
    assert match, f"not an HAProxy duration: {value!r}"
    unit = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(match[1]) * unit[match[2]]


def _containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _containerfile()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


# --- each manifest on its own -------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_manifest_is_named_and_labelled(name: str) -> None:
    manifest = MANIFESTS[name]
    assert manifest["apiVersion"] and manifest["kind"]
    assert manifest["metadata"]["name"].startswith("eeict-")
    assert manifest["metadata"]["labels"]["app.kubernetes.io/name"] == APP
    assert "namespace" not in manifest["metadata"], "the namespace comes from `oc project`"


@pytest.mark.parametrize("name", STANDARD_FILES)
def test_standard_kinds_match_the_kubernetes_schema(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(MANIFESTS[name], KUBERNETES_VERSION, strict=True)


def test_openshift_kinds_use_their_api_groups() -> None:
    assert _one("ImageStream")["apiVersion"] == "image.openshift.io/v1"
    assert _one("BuildConfig")["apiVersion"] == "build.openshift.io/v1"
    assert _one("Route")["apiVersion"] == "route.openshift.io/v1"
    assert _one("Deployment")["apiVersion"] == "apps/v1", "a Deployment, not a DeploymentConfig"


def test_kustomization_lists_every_manifest_but_the_on_demand_job() -> None:
    kustomization = yaml.safe_load((OPENSHIFT / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) == set(MANIFEST_FILES) - ON_DEMAND
    assert set(MANIFEST_FILES) >= ON_DEMAND
    pairs = [label["pairs"] for label in kustomization["labels"]]
    assert any(p.get("app.kubernetes.io/name") == APP for p in pairs)


# --- build and image ------------------------------------------------------------------------


def test_build_pushes_the_tag_the_deployment_follows() -> None:
    build = _one("BuildConfig")["spec"]
    stream = _one("ImageStream")
    tag = f"{stream['metadata']['name']}:latest"
    assert build["output"]["to"] == {"kind": "ImageStreamTag", "name": tag}
    assert build["strategy"]["type"] == "Docker"
    assert (ROOT / build["strategy"]["dockerStrategy"]["dockerfilePath"]) == CONTAINERFILE

    deployment = _one("Deployment")
    [trigger] = json.loads(deployment["metadata"]["annotations"]["image.openshift.io/triggers"])
    assert trigger["from"] == {"kind": "ImageStreamTag", "name": tag}
    container = _container("Deployment")
    assert f'@.name=="{container["name"]}"' in trigger["fieldPath"]
    # The plain tag resolves to the stream's image only with a local lookup policy.
    assert container["image"] == tag
    assert stream["spec"]["lookupPolicy"]["local"] is True


def test_build_starts_on_push_webhooks_with_a_secret() -> None:
    triggers = {t["type"]: t for t in _one("BuildConfig")["spec"]["triggers"]}
    assert {"ConfigChange", "GitLab", "GitHub"} <= set(triggers)
    for kind in ("GitLab", "GitHub"):
        assert triggers[kind][kind.lower()]["secretReference"]["name"]


def test_containerfile_builds_on_a_swappable_base() -> None:
    instructions = _containerfile()
    assert instructions[0][0] == "ARG"
    assert re.fullmatch(
        r"BASE_IMAGE=registry\.access\.redhat\.com/ubi9/python-3\d+", instructions[0][1]
    )
    froms = [args.split()[0] for op, args in instructions if op == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert set(froms) == {"${BASE_IMAGE}"}


def test_containerfile_runtime_stage_runs_as_openshift_does() -> None:
    stage = _final_stage()
    users = [args for op, args in stage if op == "USER"]
    assert users[-1].isdigit() and int(users[-1]) != 0, "numeric, non-root"
    assert ("EXPOSE", str(DEFAULT_PORT)) in stage
    entrypoint = json.loads(next(args for op, args in stage if op == "ENTRYPOINT"))
    assert entrypoint[-1].endswith("/eeict"), "exec form: eeict is PID 1 and gets SIGTERM"
    assert json.loads(next(args for op, args in stage if op == "CMD")) == ["serve"]
    runs = " ".join(args for op, args in stage if op == "RUN")
    assert "pip install" not in runs, "the runtime stage only copies the built venv"
    assert "chgrp -R 0 /data" in runs and "chmod -R g=u /data" in runs
    env = " ".join(args for op, args in stage if op == "ENV")
    recordings = _mount_path("Deployment", _one("PersistentVolumeClaim")["metadata"]["name"])
    assert f"EEICT_RECORDINGS={recordings}" in env
    assert ("VOLUME", recordings) in stage


def test_containerfile_installs_without_a_pip_cache() -> None:
    runs = [args for op, args in _containerfile() if op == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs
    assert all("--no-cache-dir" in r for r in installs)


def test_containerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((ROOT / ".containerignore").read_text().split())
    assert {".git", ".venv", "tests", "recordings", "artifacts", "node_modules"} <= ignored


class _RecordingEnviron(dict):
    """os.environ stand-in that remembers which variables were looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def _image_env() -> dict[str, str]:
    pairs = " ".join(args for op, args in _final_stage() if op == "ENV").split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_environment_variables_are_server_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every EEICT_* the image or Deployment sets is read by `eeict serve` and parses."""
    deployment_env = {e["name"]: e.get("value", "") for e in _container("Deployment")["env"]}
    values = {**_image_env(), **deployment_env}
    environ = _RecordingEnviron({k: v for k, v in values.items() if k.startswith("EEICT_")})
    monkeypatch.setattr(os, "environ", environ)
    args = build_parser().parse_args(["serve"])
    assert set(environ) <= environ.asked, "set but never read by the server"
    assert args.host == "0.0.0.0" and args.port == DEFAULT_PORT
    assert isinstance(logging.getLevelName(args.log_level), int)


# --- wiring between manifests -----------------------------------------------------------------


def test_selectors_pick_the_server_pods_only() -> None:
    deployment = _one("Deployment")["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= pod_labels.items()
    service_selector = _one("Service")["spec"]["selector"]
    assert service_selector.items() <= pod_labels.items()
    job_labels = _one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not service_selector.items() <= job_labels.items(), "the Job must not get traffic"


def test_ports_agree_from_route_to_server() -> None:
    [container_port] = _container("Deployment")["ports"]
    assert container_port["containerPort"] == DEFAULT_PORT
    [service_port] = _one("Service")["spec"]["ports"]
    assert service_port["targetPort"] in (container_port["name"], container_port["containerPort"])
    route = _one("Route")["spec"]
    assert route["to"] == {
        "kind": "Service",
        "name": _one("Service")["metadata"]["name"],
        "weight": 100,
    }
    assert route["port"]["targetPort"] in (service_port["name"], service_port["port"])
    env = {e["name"]: e for e in _container("Deployment")["env"]}
    if "EEICT_PORT" in env:
        assert env["EEICT_PORT"]["value"] == str(DEFAULT_PORT)


def test_probes_use_the_health_endpoints() -> None:
    assert {READINESS_PATH, LIVENESS_PATH} <= set(HTTP_PATHS)
    container = _container("Deployment")
    port_name = container["ports"][0]["name"]
    expected = {
        "readinessProbe": READINESS_PATH,
        "livenessProbe": LIVENESS_PATH,
        "startupProbe": LIVENESS_PATH,
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": port_name}, probe


def test_route_keeps_websockets_open() -> None:
    route = _one("Route")
    annotations = route["metadata"]["annotations"]
    assert _haproxy_seconds(annotations["haproxy.router.openshift.io/timeout"]) >= 3600
    assert _haproxy_seconds(annotations["haproxy.router.openshift.io/timeout-tunnel"]) >= 3600
    assert route["spec"]["tls"] == {
        "termination": "edge",
        "insecureEdgeTerminationPolicy": "Redirect",
    }


def test_grace_period_covers_prestop_and_drain() -> None:
    pod = _pod_spec("Deployment")
    command = _container("Deployment")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + SERVER_DRAIN_SECONDS


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_fit_the_restricted_security_context(kind: str) -> None:
    pod = _pod_spec(kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in pod["securityContext"], "OpenShift assigns the UID"
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "runAsUser" not in context and not context.get("privileged")


def _mount_path(kind: str, claim: str) -> str:
    """Where `kind` mounts the whole PersistentVolumeClaim `claim`."""
    volumes = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in _pod_spec(kind)["volumes"]
        if "persistentVolumeClaim" in v
    }
    [path] = [
        m["mountPath"]
        for m in _container(kind)["volumeMounts"]
        if volumes.get(m["name"]) == claim and "subPath" not in m
    ]
    return path


def test_job_processes_demos_into_the_servers_volume() -> None:
    claim = _one("PersistentVolumeClaim")["metadata"]["name"]
    recordings = _mount_path("Deployment", claim)
    assert _mount_path("Job", claim) == recordings
    job = _container("Job")
    assert job["image"] == _container("Deployment")["image"]
    assert job["command"][:2] == ["/bin/sh", "-c"], "the demo glob needs a shell"
    script = job["args"][0]
    [process] = [line for line in script.splitlines() if "eeict process" in line]
    assert shlex.split(process)[-2:] == ["--out", recordings]
    uploads = [m for m in job["volumeMounts"] if m.get("subPath") == "uploads"]
    assert [m["mountPath"] for m in uploads] == ["/data/uploads"]
    assert "/data/uploads/*.dem" in script
    assert _one("Job")["spec"]["template"]["spec"]["restartPolicy"] == "Never"
