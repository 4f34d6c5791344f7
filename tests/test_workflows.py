"""The GitHub Actions workflows: linted with actionlint, and their delivery steps run here.

A workflow error shows up only after a push, on GitHub; actionlint (types of expressions,
action inputs, runner labels, shell scripts) catches it in CI instead. The GitLab mirror step is
run for real against a local bare repository, configured and not configured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require_module, require_shared

yaml = require_module("yaml", "install the test extra (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
DELIVERY_BRANCHES = {"main", "production"}


def _actionlint() -> str:
    """The actionlint binary from the test extra (installed beside this interpreter)."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if found is None:
        message = "actionlint is missing: install the test extra (pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _workflow() -> dict[str, Any]:
    workflow = yaml.safe_load(CI.read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def _step(job: str, name_part: str) -> dict[str, Any]:
    [step] = [s for s in _workflow()["jobs"][job]["steps"] if name_part in s.get("name", "")]
    return step


def test_workflows_lint_clean() -> None:
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert CI in files
    result = subprocess.run(
        [_actionlint(), "-color=false", *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """So a clean lint means something: an unknown expression context fails it."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ secret.NOPE }}\n"
    )
    result = subprocess.run(
        [_actionlint(), "-color=false", str(broken)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0 and "secret" in result.stdout


def test_every_push_and_pull_request_runs_the_readme_test_command() -> None:
    workflow = _workflow()
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert workflow["on"]["push"] is None, "every branch"
    test = workflow["jobs"]["test"]
    assert "if" not in test
    runs = [s["run"] for s in test["steps"] if "run" in s]
    assert "bash .ci/run" in runs
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    # GitHub's CI=true stays, so a missing tool fails; only the shared inputs may be missing.
    [step] = [s for s in test["steps"] if s.get("run") == "bash .ci/run"]
    environment = {**workflow.get("env", {}), **test.get("env", {}), **step.get("env", {})}
    assert environment.get("CI", "true") == "true"
    assert environment["EEICT_SHARED_OPTIONAL"] == "1"


@pytest.mark.parametrize(("shared_optional", "outcome"), [(None, "fail"), ("1", "skip")])
def test_under_ci_missing_shared_inputs_fail_unless_declared_optional(
    monkeypatch: pytest.MonkeyPatch, shared_optional: str | None, outcome: str
) -> None:
    monkeypatch.setenv("CI", "true")
    if shared_optional is None:
        monkeypatch.delenv("EEICT_SHARED_OPTIONAL", raising=False)
    else:
        monkeypatch.setenv("EEICT_SHARED_OPTIONAL", shared_optional)
    expected = {"fail": pytest.fail.Exception, "skip": pytest.skip.Exception}[outcome]
    with pytest.raises(expected, match="is missing"):
        require_shared("no-such-input-folder")


def test_images_and_mirror_run_after_the_tests_on_the_delivery_branches() -> None:
    jobs = _workflow()["jobs"]
    for name in ("images", "mirror"):
        job = jobs[name]
        assert "test" in job["needs"], f"{name}: only commits that pass the tests"
        for branch in DELIVERY_BRANCHES:
            assert f"github.ref_name == '{branch}'" in job["if"]
        assert "github.event_name == 'push'" in job["if"]
    assert jobs["images"]["needs"] == "test"
    assert set(jobs["mirror"]["needs"]) == {"test", "images"}, "GitLab builds what CI built"
    assert set(jobs["images"]["strategy"]["matrix"]["flavor"]) == {"serving", "processing"}
    smoke = _step("images", "Smoke")["run"]
    assert smoke.startswith("scripts/ci-smoke-image.sh ")
    assert (ROOT / "scripts" / "ci-smoke-image.sh").stat().st_mode & 0o111


SMOKE = ROOT / "scripts" / "ci-smoke-image.sh"


def _smoke_with_image_of(tmp_path: Path, size: int) -> subprocess.CompletedProcess[str]:
    """The smoke script on a serving image of ``size`` bytes. No Docker daemon runs here: a
    stand-in `docker` reports the size, and records and fails every other command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "image inspect" ]; then echo {size}; exit 0; fi\n'
        f'echo "$*" >>"{tmp_path}/calls"; exit 1\n'
    )
    docker.chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(SMOKE), "serving", "eeict-stream-serving:ci"],
        capture_output=True, text=True, timeout=60, check=False, env=environment,
    )  # fmt: skip


def test_the_smoke_test_fails_a_serving_image_over_250_mb(tmp_path: Path) -> None:
    result = _smoke_with_image_of(tmp_path, 251_000_000)
    assert result.returncode != 0
    assert "251 MB, over 250 MB" in result.stderr
    assert not (tmp_path / "calls").exists(), "nothing else runs once the size is over"


def test_the_smoke_test_goes_on_with_a_serving_image_under_250_mb(tmp_path: Path) -> None:
    result = _smoke_with_image_of(tmp_path, 249_000_000)
    assert "serving image: 249 MB (limit 250 MB)" in result.stdout
    assert "over" not in result.stderr
    # The next check ran (and failed, there being no image to run).
    assert "run" in (tmp_path / "calls").read_text()
    assert result.returncode != 0


def _mirror_script() -> tuple[str, dict[str, str]]:
    step = _step("mirror", "GitLab")
    assert step["env"]["MIRROR_URL"] == "${{ vars.GITLAB_MIRROR_URL }}"
    assert step["env"]["MIRROR_TOKEN"] == "${{ secrets.GITLAB_MIRROR_TOKEN }}"
    return step["run"], step["env"]


def _run_mirror(checkout: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script, _ = _mirror_script()
    assert "${{" not in script, "values come in through env, never pasted into the script"
    environment = {"PATH": os.environ["PATH"], "HOME": str(checkout), **env}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        capture_output=True, text=True, timeout=60, check=False, cwd=checkout, env=environment,
    )  # fmt: skip


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A repository with one commit, standing in for the runner's checkout."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text("x\n")
    subprocess.run([*git, "add", "README.md"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=repo, check=True)
    return repo


@pytest.mark.parametrize("missing", ["MIRROR_URL", "MIRROR_TOKEN"])
def test_mirror_is_skipped_cleanly_when_not_configured(checkout: Path, missing: str) -> None:
    values = {"MIRROR_URL": "file:///nowhere.git", "MIRROR_TOKEN": "t", "BRANCH": "main"}
    values[missing] = ""
    result = _run_mirror(checkout, **values)
    assert result.returncode == 0, result.stderr
    assert "GitLab mirror skipped" in result.stdout


def test_mirror_pushes_the_branch_to_the_remote(checkout: Path, tmp_path: Path) -> None:
    remote = tmp_path / "gitlab.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout.strip()
    for _ in range(2):  # a second run (nothing new) must succeed too
        result = _run_mirror(
            checkout, MIRROR_URL=remote.as_uri(), MIRROR_TOKEN="secret-token", BRANCH="main"
        )
        assert result.returncode == 0, result.stderr
    pushed = subprocess.run(
        ["git", "rev-parse", "refs/heads/main"], cwd=remote, capture_output=True, text=True
    )
    assert pushed.stdout.strip() == head
    assert "secret-token" not in result.stdout + result.stderr
