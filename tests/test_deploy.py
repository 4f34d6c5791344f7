"""The OpenShift manifests and the Containerfile agree with each other and with the server.

Both overlays (and their on-demand Job and upload pod) are rendered with kustomize itself
(`kubectl kustomize`, which embeds it; it runs offline) and the standard kinds are validated
against the Kubernetes schemas. A mismatch here (a selector that selects nothing, a probe on a
path the server does not serve, a Route timeout that drops sockets after 30 s, a setting that
does not roll out) only shows up on the cluster, minutes into a rollout; these checks catch it
in CI instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import require_module
from gsi_posts import gsi_payload, post_gsi, sample_count, scrape
from packaging.requirements import Requirement

from server.cli import build_parser
from server.config import DEFAULT_HTTP_PORT, DEFAULT_PORT, ServerConfig

yaml = require_module("yaml", "install the test extra (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
OPENSHIFT = ROOT / "openshift"
CONTAINERFILE = ROOT / "Containerfile"
APP = "eeict-stream"
INGEST = "eeict-ingest"
REDIS = "eeict-redis"
ENVIRONMENTS = ["test", "production"]
# The on-demand kustomizations beside each overlay's main one.
ON_DEMAND = ["process", "upload"]
WS_PORT = DEFAULT_PORT
HTTP_PORT = DEFAULT_HTTP_PORT


def _http_paths() -> set[str]:
    """The paths the server's HTTP app routes (built, not started)."""
    from server import http_app
    from server.app import App

    router = http_app.build(App(ServerConfig())).router
    return {resource.canonical for resource in router.resources()}


HTTP_PATHS = _http_paths()
WS_PATHS = ["/live", "/replay", "/demodata"]
GSI_PATH = "/gsi"  # POST /gsi/<match>: to the ingest, never to a server replica
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
SERVER_DRAIN_SECONDS = 10  # the server exits at most this long after SIGTERM
# Kubernetes version whose schemas validate the standard kinds (OpenShift 4.17).
KUBERNETES_VERSION = "1.30.0"
# Distributions only `eeict process` needs (polars' compiled core is polars-runtime-32).
PROCESSING_STACK = {"demoparser2", "pandas", "polars", "polars-runtime-32", "pyarrow"}
# Kinds the Kubernetes JSON schemas do not cover; they get the hand-written checks below.
CUSTOM_GROUPS = ("image.openshift.io/", "build.openshift.io/", "route.openshift.io/", "monitoring.")

Manifest = dict[str, Any]


# --- rendering ------------------------------------------------------------------------------


def _kustomize_command() -> list[str]:
    """`kubectl kustomize` (kubectl embeds kustomize) or a standalone `kustomize build`."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    message = "neither kubectl nor kustomize is installed: the manifests cannot be rendered"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# Each overlay's secrets/ files (never committed), by the Secret they make, and a key in each.
SECRET_FILES = {"auth.env": "token", "redis.env": "password", "gsi.env": "matches"}


def _write_secrets(tree: Path, env: str, **values: str) -> None:
    """An overlay's secrets/*.env as an operator writes them (``values``: by file stem)."""
    folder = tree / "overlays" / env / "secrets"
    folder.mkdir(exist_ok=True)
    for file, key in SECRET_FILES.items():
        stem = file.removesuffix(".env")
        value = values.get(stem, f"{stem}-for-{env}" if stem != "gsi" else f"m={env}-token")
        (folder / file).write_text(f"{key}={value}\n")


def _operator_secrets(folder: str, names: list[str]) -> list[str]:
    return [
        n for n in names if n == "token" or (folder.endswith("/secrets") and n.endswith(".env"))
    ]


def _copy_tree(tmp: Path) -> Path:
    """A copy of openshift/ with each overlay's secrets/ files, as an operator makes them."""
    tree = tmp / "openshift"
    # Never an operator's real secrets from this checkout.
    shutil.copytree(OPENSHIFT, tree, ignore=_operator_secrets)
    for env in ENVIRONMENTS:
        _write_secrets(tree, env)
    return tree


def _render(tree: Path, kustomization: str) -> list[Manifest]:
    result = subprocess.run(
        [*_kustomize_command(), str(tree / kustomization)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{kustomization}: {result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """Every overlay and its on-demand parts, keyed like "production" or "test/process"."""
    tree = _copy_tree(tmp_path_factory.mktemp("render"))
    out = {}
    for env in ENVIRONMENTS:
        out[env] = _render(tree, f"overlays/{env}")
        for part in ON_DEMAND:
            out[f"{env}/{part}"] = _render(tree, f"overlays/{env}/{part}")
    return out


class Env:
    """One environment's rendered manifests, with lookups by kind."""

    def __init__(self, rendered: dict[str, list[Manifest]], name: str) -> None:
        self.name = name
        self.main = rendered[name]
        self.process = rendered[f"{name}/process"]
        self.upload = rendered[f"{name}/upload"]

    def all(self) -> list[Manifest]:
        return self.main + self.process + self.upload

    def kinds(self, kind: str) -> list[Manifest]:
        return [m for m in self.all() if m["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        """The one manifest of ``kind`` (named ``name``); a Deployment or Service without a
        name is the server's (beside it run the ingest's and Redis's)."""
        if name is None and kind in ("Deployment", "Service"):
            name = APP
        found = [m for m in self.kinds(kind) if name is None or m["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def pod(self, kind: str, name: str | None = None) -> Manifest:
        manifest = self.one(kind, name)
        return manifest["spec"] if kind == "Pod" else manifest["spec"]["template"]["spec"]

    def container(self, kind: str, name: str | None = None) -> Manifest:
        [container] = self.pod(kind, name)["containers"]
        return container


@pytest.fixture(params=ENVIRONMENTS)
def env(request: pytest.FixtureRequest, rendered: dict[str, list[Manifest]]) -> Env:
    return Env(rendered, request.param)


def _haproxy_seconds(value: str) -> float:
    """An HAProxy duration ("90s", "1h", "500" = ms) in seconds."""
    match = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value)
    assert match, f"not an HAProxy duration: {value!r}"
    unit = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(match[1]) * unit[match[2]]


# --- each manifest on its own -------------------------------------------------------------


def test_every_manifest_is_named_and_labelled(env: Env) -> None:
    for manifest in env.all():
        assert manifest["apiVersion"] and manifest["kind"]
        assert manifest["metadata"]["name"].startswith("eeict-")
        assert manifest["metadata"]["labels"]["app.kubernetes.io/name"] == APP
        assert "namespace" not in manifest["metadata"], "the namespace comes from `oc project`"


def test_standard_kinds_match_the_kubernetes_schema(env: Env) -> None:
    kubernetes_validate = require_module(
        "kubernetes_validate", "install the test extra (pip install -e '.[test]')"
    )
    standard = [m for m in env.all() if not m["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert {"Deployment", "Service", "Job", "Pod", "ConfigMap", "Secret"} <= {
        m["kind"] for m in standard
    }
    for manifest in standard:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_custom_kinds_use_their_api_groups(env: Env) -> None:
    expected = {
        "ImageStream": "image.openshift.io/v1",
        "BuildConfig": "build.openshift.io/v1",
        "Route": "route.openshift.io/v1",
        "ServiceMonitor": "monitoring.coreos.com/v1",
    }
    for kind, api in expected.items():
        assert {m["apiVersion"] for m in env.kinds(kind)} == {api}, kind
    assert env.one("Deployment")["apiVersion"] == "apps/v1", "a Deployment, not a DeploymentConfig"


def test_the_long_lived_parts_stay_out_of_the_on_demand_ones(env: Env) -> None:
    assert {m["kind"] for m in env.process} == {"Job"}
    assert {m["kind"] for m in env.upload} == {"Pod"}
    assert "Job" not in {m["kind"] for m in env.main}, "a Job cannot be re-applied"


# --- configuration that rolls out ---------------------------------------------------------


def _generated(env: Env, kind: str, base_name: str) -> Manifest:
    [found] = [m for m in env.kinds(kind) if m["metadata"]["name"].startswith(base_name + "-")]
    assert re.fullmatch(rf"{base_name}-[a-z0-9]{{10}}", found["metadata"]["name"])
    return found


def _token_ref(env: Env) -> Manifest:
    [token] = [e for e in env.container("Deployment")["env"] if e["name"] == "EEICT_TOKEN"]
    return token["valueFrom"]["secretKeyRef"]


def test_deployment_uses_the_generated_config_and_secret(env: Env) -> None:
    config = _generated(env, "ConfigMap", "eeict-stream-config")
    secret = _generated(env, "Secret", "eeict-stream-auth")
    container = env.container("Deployment")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    reference = _token_ref(env)
    assert reference["name"] == secret["metadata"]["name"]
    assert reference["key"] in secret["data"]
    # Fail closed: a missing Secret stops the pod instead of starting an open server.
    assert not reference.get("optional", False)
    credentials = env.one("ServiceMonitor")["spec"]["endpoints"][0]["authorization"]
    assert credentials["credentials"] == {"name": secret["metadata"]["name"], "key": "token"}
    # The live matches CS2 may post, from their generated Secret (none: every post 404s).
    gsi = _generated(env, "Secret", "eeict-stream-gsi")
    [matches] = [e for e in env.container("Deployment", INGEST)["env"] if e["name"] == "EEICT_GSI"]
    assert matches["valueFrom"]["secretKeyRef"] == {
        "name": gsi["metadata"]["name"],
        "key": "matches",
    }


@pytest.mark.parametrize("missing", list(SECRET_FILES))
def test_an_overlay_without_its_secrets_does_not_render(tmp_path: Path, missing: str) -> None:
    tree = _copy_tree(tmp_path)
    for env in ENVIRONMENTS:
        (tree / "overlays" / env / "secrets" / missing).unlink()
        result = subprocess.run(
            [*_kustomize_command(), str(tree / "overlays" / env)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode != 0, f"{env} rendered without secrets/{missing}"
        assert missing in result.stderr


def _references(manifests: list[Manifest]) -> dict[str, set[str]]:
    """Each Deployment's pod template -> the ConfigMaps and Secrets it names (hashed names)."""
    found = {}
    for deployment in (m for m in manifests if m["kind"] == "Deployment"):
        names = set()
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                names.add(source["configMapRef"]["name"])
            for variable in container.get("env", []):
                for ref in ("secretKeyRef", "configMapKeyRef"):
                    if ref in variable.get("valueFrom", {}):
                        names.add(variable["valueFrom"][ref]["name"])
        found[deployment["metadata"]["name"]] = names
    return found


def _rolled(before: dict[str, set[str]], after: dict[str, set[str]]) -> set[str]:
    """The Deployments whose pod template changed: those that roll out."""
    return {name for name in before if before[name] != after[name]}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_changed_settings_or_secrets_roll_out_what_reads_them(
    tmp_path: Path, environment: str
) -> None:
    """The hashed names are in the pod templates, so a changed file is a rollout of exactly the
    Deployments that read it; the same content again keeps the names."""
    tree = _copy_tree(tmp_path)
    kustomization = f"overlays/{environment}"
    original = _references(_render(tree, kustomization))
    changes = {
        "auth": {APP, INGEST},
        "redis": {APP, INGEST, REDIS},
        "gsi": {INGEST},
    }
    for stem, readers in changes.items():
        _write_secrets(tree, environment, **{stem: "changed"})
        assert _rolled(original, _references(_render(tree, kustomization))) == readers, stem
        _write_secrets(tree, environment)
        assert _references(_render(tree, kustomization)) == original, "same content, same names"

    server_env = tree / "base" / "server.env"
    server_env.write_text(server_env.read_text().replace("EEICT_LOOP=1", "EEICT_LOOP=0"))
    assert _rolled(original, _references(_render(tree, kustomization))) == {APP, INGEST}
    server_env.write_text(server_env.read_text().replace("EEICT_LOOP=0", "EEICT_LOOP=1"))
    assert _references(_render(tree, kustomization)) == original


# --- build and image ------------------------------------------------------------------------


def _tag(env: Env, build: str) -> str:
    output = env.one("BuildConfig", build)["spec"]["output"]["to"]
    assert output["kind"] == "ImageStreamTag"
    return output["name"]


def test_builds_push_the_tags_the_pods_run(env: Env) -> None:
    serving, processing = _tag(env, APP), _tag(env, f"{APP}-processing")
    streams = {m["metadata"]["name"]: m for m in env.kinds("ImageStream")}
    for tag in (serving, processing):
        stream = streams[tag.split(":")[0]]
        # A plain NAME:TAG resolves to the stream's image only with a local lookup policy.
        assert stream["spec"]["lookupPolicy"]["local"] is True

    deployment = env.one("Deployment")
    [trigger] = json.loads(deployment["metadata"]["annotations"]["image.openshift.io/triggers"])
    assert trigger["from"] == {"kind": "ImageStreamTag", "name": serving}
    container = env.container("Deployment")
    assert f'@.name=="{container["name"]}"' in trigger["fieldPath"]
    assert container["image"] == serving
    assert env.container("Pod")["image"] == serving
    assert env.container("Job")["image"] == processing


def test_every_image_is_built_here_or_pinned_by_digest(env: Env) -> None:
    """Ours come from the ImageStreams the builds push; anything else only by digest, so a
    node pulls exactly what was tested whatever a registry's tag points at meanwhile."""
    ours = {m["metadata"]["name"] for m in env.kinds("ImageStream")}
    pods = [env.pod(m["kind"], m["metadata"]["name"]) for m in env.all()
            if m["kind"] in ("Deployment", "Job", "Pod")]  # fmt: skip
    images = [c["image"] for pod in pods for c in pod["containers"]]
    others = [image for image in images if image.partition(":")[0] not in ours]
    assert others, "Redis's image is not built here"
    for image in others:
        assert re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", image), image


def test_builds_pick_the_image_flavour_and_one_git_ref(env: Env) -> None:
    refs = set()
    for name, flavor in ((APP, "serving"), (f"{APP}-processing", "processing")):
        spec = env.one("BuildConfig", name)["spec"]
        assert spec["strategy"]["type"] == "Docker"
        docker = spec["strategy"]["dockerStrategy"]
        assert (ROOT / docker["dockerfilePath"]) == CONTAINERFILE
        assert docker["buildArgs"] == [{"name": "FLAVOR", "value": flavor}]
        refs.add(spec["source"]["git"]["ref"])
        triggers = {t["type"]: t for t in spec["triggers"]}
        assert {"ConfigChange", "GitLab", "GitHub"} <= set(triggers)
        for kind in ("GitLab", "GitHub"):
            assert triggers[kind][kind.lower()]["secretReference"]["name"]
    assert len(refs) == 1, "both images from the same commits"


def test_environments_differ_where_they_should(rendered: dict[str, list[Manifest]]) -> None:
    test, production = (Env(rendered, e) for e in ENVIRONMENTS)

    def facts(env: Env) -> dict[str, object]:
        return {
            "host": env.one("Route", APP)["spec"]["host"],
            "tag": _tag(env, APP),
            "ref": env.one("BuildConfig", APP)["spec"]["source"]["git"]["ref"],
            "replicas": env.one("Deployment")["spec"]["replicas"],
            "resources": env.container("Deployment")["resources"],
            "shards": env.one("Job")["spec"]["completions"],
            "token": _generated(env, "Secret", "eeict-stream-auth")["data"],
        }

    a, b = facts(test), facts(production)
    for key in a:
        assert a[key] != b[key], f"{key} is the same in both environments"


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


def _stages() -> dict[str, str]:
    """Stage name -> what it is built FROM."""
    stages = {}
    for op, args in _containerfile():
        if op == "FROM":
            source, _, name = args.partition(" AS ")
            stages[name.strip()] = source.strip()
    return stages


def _containerfile_args() -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in _containerfile() if op == "ARG" and "=" in a)


def test_containerfile_bases_are_pinned_by_digest() -> None:
    args = _containerfile_args()
    builder = re.fullmatch(
        r"registry\.access\.redhat\.com/ubi9/python-3(\d+)@sha256:[0-9a-f]{64}",
        args["BUILDER_IMAGE"],
    )
    assert builder, args["BUILDER_IMAGE"]
    runtime = r"registry\.access\.redhat\.com/ubi9/ubi-minimal@sha256:[0-9a-f]{64}"
    assert re.fullmatch(runtime, args["RUNTIME_IMAGE"]), args["RUNTIME_IMAGE"]
    # The venv built on the builder links to /usr/bin/python3.N: the runtime installs that one.
    [install] = [a for op, a in _final_stage() if op == "RUN" and "microdnf install" in a]
    assert f" python3.{builder[1]} " in install


def test_containerfile_builds_either_flavour_from_one_file() -> None:
    stages = _stages()
    assert stages["serving-venv"] == "${BUILDER_IMAGE}"
    assert stages["processing-venv"] == "serving-venv", "processing = serving + the extra"
    assert stages["venv"] == "${FLAVOR}-venv"
    assert stages["runtime"] == "${RUNTIME_IMAGE}", "the runtime holds nothing from the build"
    flavors = {a.split("=", 1)[1] for op, a in _containerfile() if a.startswith("FLAVOR=")}
    assert flavors == {"serving"}, "the default image is the server"


LOCKS = ROOT / "requirements"


def test_every_install_is_locked_hash_checked_and_leaves_no_cache() -> None:
    installs = [args for op, args in _containerfile() if op == "RUN" and "pip install" in args]
    assert len(installs) == 2
    serving, processing = installs
    for install, lock in ((serving, "serving"), (processing, "processing")):
        for command in re.findall(r"pip install[^&]*", install):
            assert "--no-cache-dir" in command and "--no-deps" in command, command
        assert f"--require-hashes --no-deps -r /src/requirements/{lock}.txt" in install
        assert install.endswith("pip check"), "the locked set is complete"
    # The project itself, built with the locked setuptools, never an isolated download.
    assert "--no-deps --no-build-isolation /src" in serving
    copies = [args for op, args in _containerfile() if op == "COPY"]
    assert "requirements/ /src/requirements/" in copies


def test_containerfile_runtime_stage_runs_as_openshift_does() -> None:
    stage = _final_stage()
    users = [args for op, args in stage if op == "USER"]
    assert users[-1].isdigit() and int(users[-1]) != 0, "numeric, non-root"
    assert ("EXPOSE", f"{WS_PORT} {HTTP_PORT}") in stage
    entrypoint = json.loads(next(args for op, args in stage if op == "ENTRYPOINT"))
    assert entrypoint[-1].endswith("/eeict"), "exec form: eeict is PID 1 and gets SIGTERM"
    assert json.loads(next(args for op, args in stage if op == "CMD")) == ["serve"]
    runs = " ".join(args for op, args in stage if op == "RUN")
    assert "pip install" not in runs, "the runtime stage only copies the built venv"
    assert "chgrp -R 0 /data" in runs and "chmod -R g=u /data" in runs
    assert ("VOLUME", "/data/recordings") in stage
    assert _image_env()["EEICT_RECORDINGS"] == "/data/recordings"


def test_containerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((ROOT / ".containerignore").read_text().split())
    assert {".git", ".venv", "tests", "recordings", "artifacts", "node_modules"} <= ignored
    assert not {"requirements", "requirements/"} & ignored


# --- dependencies: the serving image without the processing stack ----------------------------


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, walked through installed metadata."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen or (requirement.marker and not requirement.marker.evaluate()):
            continue
        seen.add(name)
        for line in metadata.requires(requirement.name) or []:
            child = Requirement(line)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                todo.append(child)
    return seen


def test_serving_dependencies_exclude_the_processing_stack() -> None:
    project = _project()
    serving = _closure(project["dependencies"])
    assert {"websockets", "numpy", "prometheus-client"} <= serving
    assert not serving & PROCESSING_STACK, serving & PROCESSING_STACK
    processing = _closure(project["optional-dependencies"]["processing"])
    assert processing >= PROCESSING_STACK, "the processing extra brings the parser stack"


# Run in a fresh interpreter where the processing stack cannot be imported, as in the serving
# image: the command line, the app and its HTTP side must not need it.
WITHOUT_PROCESSING_STACK = """
import asyncio, importlib.abc, sys, tempfile, urllib.request
from pathlib import Path

BLOCKED = set(sys.argv[1:])


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())

from server.cli import build_parser
from processing.recording import write_recording
from processing.source import SourceInfo
from server.app import App
from server.config import ServerConfig


async def serve(folder: Path) -> None:
    frames = [{"tick": t, "round_time": t / 64, "round_start": t == 0, "players": []}
              for t in range(256)]
    write_recording(folder / "tiny.eeict", SourceInfo("de_mirage", 64, "t.dem", "0" * 64, "t"),
                    frames)
    build_parser().parse_args(["serve"])
    app = App(ServerConfig(host="127.0.0.1", port=0, http_port=0, recordings=folder,
                           live=["tiny"]))
    await app.start()
    try:
        for path in ("/healthz", "/readyz", "/recordings"):
            url = f"http://127.0.0.1:{app.http_port}{path}"
            answer = await asyncio.to_thread(urllib.request.urlopen, url, timeout=5)
            print(path, answer.status)
    finally:
        await app.shutdown()


with tempfile.TemporaryDirectory() as folder:
    asyncio.run(serve(Path(folder)))
print("imported:", sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
"""
# Module names of the processing stack (polars' compiled core is _polars_runtime_32).
PROCESSING_MODULES = ["demoparser2", "pandas", "polars", "_polars_runtime_32", "pyarrow"]


def test_the_server_runs_without_the_processing_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROCESSING_STACK, *PROCESSING_MODULES],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines == ["/healthz 200", "/readyz 200", "/recordings 200", "imported: []"], lines


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """A lock file's packages: name -> (version, sha256 hashes). An entry is one requirement
    (``name==version``, maybe `` ; marker``) and its ``--hash`` options, over several lines."""
    text = "\n".join(
        line
        for line in (LOCKS / f"{name}.txt").read_text().splitlines()
        if not line.startswith("#")
    )
    found = {}
    for entry in re.split(r"\n(?=\S)", text.strip()):
        requirement = Requirement(" ".join(entry.split("--hash")[0].replace("\\", " ").split()))
        [pin] = requirement.specifier
        assert pin.operator == "==", f"{name}.txt: not an exact pin: {entry.splitlines()[0]}"
        hashes = re.findall(r"--hash=sha256:(\S+)", entry)
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), entry
        found[requirement.name.lower().replace("_", "-")] = (pin.version, hashes)
    return found


def test_the_locks_hold_everything_the_images_install_with_hashes() -> None:
    """The Containerfile installs with --no-deps: a dependency missing from a lock would be
    missing from the image (pip check then fails the build; this fails sooner)."""
    project = _project()
    serving, added = _lock("serving"), _lock("processing")
    build_backend = {Requirement(r).name for r in _build_requires()}
    assert _closure(project["dependencies"]) | build_backend <= set(serving)
    assert _closure(project["optional-dependencies"]["processing"]) <= set(serving) | set(added)
    assert not set(serving) & set(added), "each package in one lock"
    assert not set(serving) & PROCESSING_STACK, "the serving image without the parser stack"
    assert set(added) >= PROCESSING_STACK


def _build_requires() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]


# --- the server's settings ------------------------------------------------------------------


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


def test_environment_variables_are_server_options(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every EEICT_* the image, the ConfigMap or the Deployment sets is read and parses."""
    config = _generated(env, "ConfigMap", "eeict-stream-config")["data"]
    plain = {e["name"]: e["value"] for e in env.container("Deployment")["env"] if "value" in e}
    values = {**_image_env(), **config, **plain, "EEICT_TOKEN": "x"}
    environ = _RecordingEnviron({k: v for k, v in values.items() if k.startswith("EEICT_")})
    monkeypatch.setattr(os, "environ", environ)
    args = build_parser().parse_args(["serve"])
    assert set(environ) <= environ.asked, f"set but never read: {set(environ) - environ.asked}"
    assert args.host == "0.0.0.0" and args.port == WS_PORT and args.http_port == HTTP_PORT
    assert isinstance(logging.getLevelName(args.log_level), int)


# --- wiring between manifests -----------------------------------------------------------------


def test_selectors_pick_the_server_pods_only(env: Env) -> None:
    deployment = env.one("Deployment")["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= pod_labels.items()
    service_selector = env.one("Service")["spec"]["selector"]
    assert service_selector.items() <= pod_labels.items()
    others = [
        env.one("Job")["spec"]["template"]["metadata"]["labels"],
        env.one("Pod")["metadata"]["labels"],
    ]
    for labels in others:
        assert not service_selector.items() <= labels.items(), "only the server gets traffic"
    monitor = env.one("ServiceMonitor")["spec"]["selector"]
    assert _selector_matches(monitor, env.one("Service")["metadata"]["labels"])


def test_ports_agree_from_route_to_server(env: Env) -> None:
    container = env.container("Deployment")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"ws": WS_PORT, "http": HTTP_PORT}
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert values["EEICT_PORT"] == str(WS_PORT) and values["EEICT_HTTP_PORT"] == str(HTTP_PORT)
    service = env.one("Service")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for name, port in service_ports.items():
        assert port["targetPort"] in (name, ports[name]) and name in ports
    monitor = env.one("ServiceMonitor")["spec"]["endpoints"][0]
    assert monitor["port"] == "http" and monitor["path"] == "/metrics" in HTTP_PATHS
    for route in env.kinds("Route"):
        spec = route["spec"]
        if spec["path"] == GSI_PATH:
            continue  # the ingest's: test_the_ingest_takes_the_posts_and_the_servers_serve
        assert spec["to"] == {"kind": "Service", "name": service["metadata"]["name"], "weight": 100}
        assert spec["port"]["targetPort"] in service_ports


def test_routes_split_one_host_by_path(env: Env) -> None:
    routes = {r["spec"]["path"]: r["spec"] for r in env.kinds("Route")}
    assert set(routes) == {"/", GSI_PATH, *WS_PATHS}
    assert routes[GSI_PATH]["to"]["name"] == INGEST
    assert routes["/"]["port"]["targetPort"] == "http"
    for path in WS_PATHS:
        assert routes[path]["port"]["targetPort"] == "ws", path
    [host] = {spec["host"] for spec in routes.values()}
    assert host != "eeict-stream.example.invalid", "the overlay sets the host"
    origins = _generated(env, "ConfigMap", "eeict-stream-config")["data"]["EEICT_ALLOWED_ORIGINS"]
    assert origins == f"https://{host}", "the page on the Route may open its sockets"


def test_routes_keep_websockets_open(env: Env) -> None:
    for route in env.kinds("Route"):
        annotations = route["metadata"]["annotations"]
        assert _haproxy_seconds(annotations["haproxy.router.openshift.io/timeout"]) >= 3600
        assert _haproxy_seconds(annotations["haproxy.router.openshift.io/timeout-tunnel"]) >= 3600
        assert annotations["haproxy.router.openshift.io/balance"] == "leastconn"
        assert route["spec"]["tls"] == {
            "termination": "edge",
            "insecureEdgeTerminationPolicy": "Redirect",
        }


def test_probes_use_the_health_endpoints_on_the_http_port(env: Env) -> None:
    assert {READINESS_PATH, LIVENESS_PATH} <= set(HTTP_PATHS)
    container = env.container("Deployment")
    expected = {
        "readinessProbe": READINESS_PATH,
        "livenessProbe": LIVENESS_PATH,
        "startupProbe": LIVENESS_PATH,
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe


def test_grace_period_covers_prestop_and_drain(env: Env) -> None:
    command = env.container("Deployment")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = env.pod("Deployment")["terminationGracePeriodSeconds"]
    assert grace > int(command[1]) + SERVER_DRAIN_SECONDS


@pytest.mark.parametrize(("kind", "name"), [("Deployment", APP), ("Deployment", INGEST),
                                           ("Job", None), ("Pod", None)])  # fmt: skip
def test_pods_fit_the_restricted_security_context(env: Env, kind: str, name: str | None) -> None:
    pod = env.pod(kind, name)
    assert pod["automountServiceAccountToken"] is False, "no API token in pods that need none"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in pod["securityContext"], "OpenShift assigns the UID"
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "runAsUser" not in context and not context.get("privileged")
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, "a writable /tmp beside the read-only root"


def _claim_mounts(env: Env, kind: str, name: str | None = None) -> dict[str, Manifest]:
    """mountPath -> mount, for mounts of the recordings claim."""
    claim = env.one("PersistentVolumeClaim")["metadata"]["name"]
    volumes = {
        v["name"]
        for v in env.pod(kind, name)["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    }
    mounts = env.container(kind, name)["volumeMounts"]
    return {m["mountPath"]: m for m in mounts if m["name"] in volumes}


def test_only_the_job_the_upload_pod_and_the_ingest_write_recordings(env: Env) -> None:
    recordings = _image_env()["EEICT_RECORDINGS"]
    server = _claim_mounts(env, "Deployment")
    assert list(server) == [recordings] and server[recordings]["readOnly"] is True
    ingest = _claim_mounts(env, "Deployment", INGEST)  # finished matches, journals
    assert list(ingest) == [recordings] and not ingest[recordings].get("readOnly")
    job = _claim_mounts(env, "Job")
    assert not job[recordings].get("readOnly") and "subPath" not in job[recordings]
    assert job["/data/uploads"] == {
        "name": job[recordings]["name"],
        "mountPath": "/data/uploads",
        "subPath": "uploads",
        "readOnly": True,
    }
    upload = _claim_mounts(env, "Pod")
    assert not upload[recordings].get("readOnly")


def test_job_shares_the_demos_among_its_indexed_pods(env: Env) -> None:
    spec = env.one("Job")["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    shards = {e["name"]: e["value"] for e in env.container("Job")["env"]}["SHARD_COUNT"]
    assert spec["completions"] == int(shards), "SHARD_COUNT must equal completions"
    assert 1 <= spec["parallelism"] <= spec["completions"]

    job = env.container("Job")
    assert job["command"][:2] == ["/bin/sh", "-c"], "the demo glob needs a shell"
    script = job["args"][0]
    assert "/data/uploads/*.dem" in script
    [line] = [line for line in script.splitlines() if "eeict process" in line]
    words = shlex.split(line)
    assert words[:3] == ["exec", "eeict", "process"]
    options = dict(zip(words[4::2], words[5::2], strict=False))
    assert options["--out"] == _image_env()["EEICT_RECORDINGS"]
    assert options["--shard"] == "$JOB_COMPLETION_INDEX/$SHARD_COUNT"
    # What the shell makes of it for the last pod parses as a shard.
    last = options["--shard"].replace("$JOB_COMPLETION_INDEX", str(spec["completions"] - 1))
    args = build_parser().parse_args(
        ["process", "a.dem", "--shard", last.replace("$SHARD_COUNT", shards)]
    )
    assert args.shard == f"{spec['completions'] - 1}/{shards}"


def test_the_job_deadline_gives_every_wave_of_pods_an_hour(env: Env) -> None:
    """activeDeadlineSeconds bounds the whole Job: with more shards than run at once, pods run
    in waves, and each wave gets at least the hour the test cluster's single wave gets."""
    spec = env.one("Job")["spec"]
    waves = math.ceil(spec["completions"] / spec["parallelism"])
    assert spec["activeDeadlineSeconds"] >= waves * 3600, (waves, spec["activeDeadlineSeconds"])
    # The documented `oc wait` waits as long as the Job may run, in either environment.
    docs = (ROOT / "docs" / "deploy.md").read_text()
    deadline = "jsonpath='{.spec.activeDeadlineSeconds}')s\""
    assert f'--timeout="$(oc get job eeict-process-demos -o {deadline}' in docs


# What one WebSocket connection can hold at worst, from the server's own bounds (docs/deploy.md,
# "Sizing"). Two figures are not in the code: a frame's size (a 10-player frame is ~3.3 KB of
# msgpack, docs/performance.md; 4 KiB with margin) and the measured idle cost of a connection.
FRAME_BYTES = 4 * 1024
IDLE_CONNECTION_BYTES = 16 * 1024  # 16.2 KB measured with 18,500 idle connections
# The server's memory at rest with its streams' caches: 52-59 MB measured, a live stream's burst
# cache (up to 32 MiB) and the chunk cache of the recordings in play (16 MiB for all).
BASELINE_BYTES = 128 * 1024 * 1024


def _worst_case_connection_bytes() -> tuple[int, int]:
    """(a live subscriber, a /replay or /demodata session) at worst."""
    from server import app, protocol, replay_session
    from server.config import ServerConfig
    from server.streams import fetch, live

    # Incoming: websockets queues MAX_QUEUE messages of at most HARD_MAX_MESSAGE, and reads one.
    incoming = (app.MAX_QUEUE + 1) * protocol.HARD_MAX_MESSAGE
    # A live subscriber is sent nothing while more than the high water is queued; what it may
    # hold is that plus one message: a burst of twice --burst frames (LiveStream.burst_for).
    burst = 2 * ServerConfig().burst * FRAME_BYTES
    live_worst = IDLE_CONNECTION_BYTES + incoming + live.FlowLimits().high_water + burst
    # A paced session's send waits while more than the write limit is queued, so it holds that
    # plus its last message (at most a fetch chunk), and replies wait in its outbox.
    paced = app.WRITE_LIMIT + fetch.CHUNK_BYTES + replay_session.OUTBOX_BYTES
    return live_worst, IDLE_CONNECTION_BYTES + incoming + paced


def connection_cap(memory_limit: int, max_replays: int) -> int:
    """Connections a pod can hold with every one at its worst: --max-replays paced sessions,
    the rest live subscribers, over the baseline."""
    live_worst, paced_worst = _worst_case_connection_bytes()
    room = memory_limit - BASELINE_BYTES - max_replays * (paced_worst - live_worst)
    return max(0, room // live_worst)


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "2Gi") in bytes."""
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity).groups()
    return int(number) * 1024 ** {"Ki": 1, "Mi": 2, "Gi": 3}[unit]


def test_the_connection_cap_fits_the_pod_memory(env: Env) -> None:
    """EEICT_MAX_CONNECTIONS = (memory limit - baseline - the paced sessions' extra) / a live
    subscriber's worst case: a pod whose every connection is at its worst still stays under its
    limit (no OOM kill that would drop every viewer at once)."""
    from server.config import ServerConfig

    config = _generated(env, "ConfigMap", "eeict-stream-config")["data"]
    for name in (APP, INGEST):
        container = env.container("Deployment", name)
        plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        settings = {**config, **plain}
        cap = int(settings["EEICT_MAX_CONNECTIONS"])
        replays = int(settings.get("EEICT_MAX_REPLAYS", ServerConfig().max_replays))
        fits = connection_cap(_bytes(container["resources"]["limits"]["memory"]), replays)
        if name == APP:
            assert cap == fits, f"{env.name}: EEICT_MAX_CONNECTIONS={cap}, the formula gives {fits}"
            assert cap >= 2000, f"{env.name}: a server pod must hold thousands of viewers"
        else:
            assert cap <= fits, f"{env.name} {name}: {cap} connections do not fit"


def test_replicas_and_storage_fit_together(env: Env) -> None:
    spec = env.one("Deployment")["spec"]
    modes = env.one("PersistentVolumeClaim")["spec"]["accessModes"]
    on_one_node: list[Callable[[], bool]] = [
        lambda: "affinity" in env.pod("Job"),
        lambda: "affinity" in env.pod("Pod"),
        lambda: "affinity" in env.pod("Deployment", INGEST),
    ]
    if spec["replicas"] > 1:
        assert modes == ["ReadWriteMany"], "every replica mounts the claim"
        assert spec["strategy"]["type"] == "RollingUpdate"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        config = _generated(env, "ConfigMap", "eeict-stream-config")["data"]
        assert float(config["EEICT_EPOCH"]) > 0, "replicas play one live tick with one epoch"
        assert not any(check() for check in on_one_node), "RWX: pods may go to any node"
    else:
        assert modes == ["ReadWriteOnce"]
        assert spec["strategy"]["type"] == "Recreate", "an RWO volume cannot attach twice"
        assert all(check() for check in on_one_node), "RWO: beside the server"


# --- monitoring: what the ServiceMonitor scrapes and the dashboard shows -----------------------


def _selector_matches(selector: Manifest, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        present = key in labels
        matches = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]
        if not matches:
            return False
    return True


def _scraped_services(env: Env) -> list[Manifest]:
    """The Services the ServiceMonitor selects that have the port it scrapes."""
    monitor = env.one("ServiceMonitor")["spec"]
    ports = {endpoint["port"] for endpoint in monitor["endpoints"]}
    return [
        service
        for service in env.kinds("Service")
        if _selector_matches(monitor["selector"], service["metadata"]["labels"])
        and ports & {port["name"] for port in service["spec"]["ports"]}
    ]


def _role_behind(env: Env, service: Manifest) -> str:
    """The `--role` of the pods a Service sends to (the one Deployment it selects)."""
    [deployment] = [
        d for d in env.kinds("Deployment")
        if _selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]  # fmt: skip
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}["EEICT_ROLE"]


def _dashboard_families() -> set[str]:
    """The metric families the Grafana dashboard queries (sample names less their suffix)."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = {n for expr in exprs for n in re.findall(r"\b((?:eeict|process)_[a-z_]+)\b", expr)}
    return {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in names}


DASHBOARD = OPENSHIFT / "monitoring" / "grafana-dashboard.json"
MATCH, GSI_TOKEN = "m", "match-token"


async def test_the_servicemonitor_scrapes_every_metric_the_dashboard_shows(
    env: Env, start_app, write_tiny
) -> None:
    """Each scraped Service's pods run as an in-process server of their role; the dashboard's
    families must be exposed by one of them, and the GSI posts counted by the pods the /gsi
    Route sends them to, which must be scraped too."""
    roles = {s["metadata"]["name"]: _role_behind(env, s) for s in _scraped_services(env)}
    [route] = [r for r in env.kinds("Route") if r["spec"]["path"] == GSI_PATH]
    posts_to = route["spec"]["to"]["name"]
    assert posts_to in roles, f"{posts_to} takes the GSI posts but is not scraped"
    write_tiny("tiny", count=200)
    exposed: dict[str, dict] = {}
    for service, role in roles.items():
        app = await start_app(role=role, live=["tiny"], gsi=[f"{MATCH}={GSI_TOKEN}"])
        if service == posts_to:
            assert await post_gsi(app.http_port, MATCH, gsi_payload(0, GSI_TOKEN)) == 200
        exposed[service] = await scrape(app.http_port)
    for family in _dashboard_families():
        assert any(family in families for families in exposed.values()), f"{family}: not scraped"
    posts = exposed[posts_to]["eeict_ingest_posts"]
    assert sample_count(posts) == 1, "the post is counted where the Route sends it"


# --- scale-out: ingest, server replicas, Redis (docs/scale-out.md) -----------------------------


def _pod_labels(env: Env, name: str) -> dict[str, str]:
    return env.one("Deployment", name)["spec"]["template"]["metadata"]["labels"]


def _env_values(env: Env, name: str) -> dict[str, Manifest]:
    return {e["name"]: e for e in env.container("Deployment", name)["env"]}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_the_ingest_takes_the_posts_and_the_servers_serve(env: Env) -> None:
    server, ingest = _env_values(env, APP), _env_values(env, INGEST)
    assert server["EEICT_ROLE"]["value"] == "serve" and ingest["EEICT_ROLE"]["value"] == "ingest"
    deployment = env.one("Deployment", INGEST)["spec"]
    assert deployment["replicas"] == 1, "one ingest per match: a second would compete"
    assert deployment["strategy"]["type"] == "Recreate", "never two ingests at once"
    assert _selects(deployment["selector"]["matchLabels"], _pod_labels(env, INGEST))
    service = env.one("Service", INGEST)
    selector = service["spec"]["selector"]
    assert _selects(selector, _pod_labels(env, INGEST))
    assert not _selects(selector, _pod_labels(env, APP)), "posts never reach a replica"
    assert not _selects(env.one("Service")["spec"]["selector"], _pod_labels(env, INGEST))
    [route] = [r for r in env.kinds("Route") if r["spec"]["path"] == GSI_PATH]
    assert route["spec"]["to"] == {"kind": "Service", "name": INGEST, "weight": 100}
    [port] = [
        p for p in service["spec"]["ports"] if p["name"] == route["spec"]["port"]["targetPort"]
    ]
    container_ports = {
        p["name"]: p["containerPort"] for p in env.container("Deployment", INGEST)["ports"]
    }
    assert (
        container_ports[port["targetPort"]] == HTTP_PORT == int(ingest["EEICT_HTTP_PORT"]["value"])
    )
    assert any(path.startswith(f"{GSI_PATH}/") for path in HTTP_PATHS), (
        "the server takes posts there"
    )
    probe = env.container("Deployment", INGEST)["readinessProbe"]["httpGet"]
    assert probe == {"path": READINESS_PATH, "port": "http"}, "not ready while Redis is away"


@pytest.mark.parametrize("name", [APP, INGEST])
def test_the_broker_url_and_redis_password_come_from_a_secret(
    env: Env, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = _env_values(env, name)
    names = [e["name"] for e in env.container("Deployment", name)["env"]]
    password = _generated(env, "Secret", REDIS)
    assert values["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": password["metadata"]["name"],
        "key": "password",
    }
    assert "password" in password["data"]
    assert names.index("REDIS_PASSWORD") < names.index("EEICT_BROKER"), "$(VAR) needs it first"
    broker = urlsplit(values["EEICT_BROKER"]["value"])
    assert broker.password == "$(REDIS_PASSWORD)" and broker.scheme == "redis"
    service = env.one("Service", REDIS)
    assert broker.hostname == service["metadata"]["name"]
    [port] = service["spec"]["ports"]
    assert broker.port == port["port"]
    redis_ports = {
        p["name"]: p["containerPort"] for p in env.container("Deployment", REDIS)["ports"]
    }
    assert redis_ports[port["targetPort"]] == broker.port
    assert _selects(service["spec"]["selector"], _pod_labels(env, REDIS))
    redis_env = {e["name"]: e for e in env.container("Deployment", REDIS)["env"]}
    assert redis_env["REDIS_PASSWORD"]["valueFrom"] == values["REDIS_PASSWORD"]["valueFrom"]
    # The value the pod gets (Kubernetes expands $(REDIS_PASSWORD)) is a valid --broker.
    config = _generated(env, "ConfigMap", "eeict-stream-config")["data"]
    url = values["EEICT_BROKER"]["value"].replace("$(REDIS_PASSWORD)", "pw")
    plain = {k: v["value"] for k, v in values.items() if k.startswith("EEICT_") and "value" in v}
    environ = {**_image_env(), **config, **plain, "EEICT_TOKEN": "x", "EEICT_BROKER": url}
    monkeypatch.setattr(os, "environ", environ)
    args = build_parser().parse_args(["serve"])
    assert args.broker == url and args.role == values["EEICT_ROLE"]["value"]


def test_only_the_project_pods_reach_redis(env: Env) -> None:
    policy = env.one("NetworkPolicy", REDIS)["spec"]
    assert _selects(policy["podSelector"]["matchLabels"], _pod_labels(env, REDIS))
    [rule] = policy["ingress"]
    [source] = rule["from"]
    for name in (APP, INGEST):
        assert _selects(source["podSelector"]["matchLabels"], _pod_labels(env, name))
    assert [p["port"] for p in rule["ports"]] == [6379]


def test_the_disruption_budget_keeps_a_server_replica(env: Env) -> None:
    budget = env.one("PodDisruptionBudget", APP)["spec"]
    selector = budget["selector"]["matchLabels"]
    assert _selects(selector, _pod_labels(env, APP))
    for other in (INGEST, REDIS):
        assert not _selects(selector, _pod_labels(env, other)), other
    replicas = env.one("Deployment")["spec"]["replicas"]
    if env.name == "production":
        assert replicas >= 2 and budget["maxUnavailable"] < replicas, "one always serves"
        update = env.one("Deployment")["spec"]["strategy"]
        assert update["type"] == "RollingUpdate" and update["rollingUpdate"]["maxUnavailable"] == 0
    else:
        assert budget["maxUnavailable"] >= replicas, "a lone replica must not block drains"
