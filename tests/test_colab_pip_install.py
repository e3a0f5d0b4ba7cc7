"""What writes files works from a pip install: run in the Colab-like environment of `make chapters`
(the package installed from its wheel), from an empty folder outside the checkout, with a fresh
home folder. Run by `make colab-cli`; COLAB_ENV_PYTHON names that environment's Python."""

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.colab

PYTHON = os.environ.get("COLAB_ENV_PYTHON")


@pytest.fixture
def run(tmp_path):
    if not PYTHON:
        pytest.skip("COLAB_ENV_PYTHON is not set: `make colab-cli` runs these in the Colab-like environment")
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(), home.mkdir()
    site = Path(subprocess.run([PYTHON, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    before = {p for p in site.rglob("*") if p.is_file()}

    def _run(*args, timeout=600):
        env = {**os.environ, "HOME": str(home), "MLCOURSE_QUICK": "1"}
        result = subprocess.run([PYTHON, *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        written = {p for p in site.rglob("*") if p.is_file()} - before
        written = {p for p in written if "__pycache__" not in p.parts}
        return result, written, work, home

    _run.site = site
    return _run


def test_the_wheel_is_what_runs(run):
    import mlcourse

    result, _, _, _ = run("-c", "import mlcourse; print(mlcourse.__file__, mlcourse.__version__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(run.site / "mlcourse" / "__init__.py"), mlcourse.__version__]


def test_reproduce_writes_its_record_outside_the_installed_package(run):
    result, written, work, home = run("-m", "mlcourse.reproduce", "maml-sinusoid", "--scale", "quick",
                                      "--iterations", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not written, f"reproduce wrote into the installed package: {sorted(map(str, written))[:5]}"
    records = list(work.rglob("maml-sinusoid.json")) + list(home.rglob("maml-sinusoid.json"))
    assert records, f"no record written under the working folder or the home folder:\n{result.stdout[-1000:]}"


def test_assign_all_writes_every_student_notebook(run):
    result, written, work, _ = run("-m", "mlcourse.assign", "--all", "--out", "students")
    assert result.returncode == 0, result.stderr[-2000:]
    chapters = len(list((Path(__file__).resolve().parents[1] / "chapters").glob("*.ipynb")))
    assert len(list((work / "students").glob("*.ipynb"))) == chapters
    assert not written


def test_the_stored_results_travel_with_the_package(run):
    result, _, _, _ = run("-c", "from mlcourse import records; r = records.load('maml-omniglot-5w1s'); "
                                "print(records.find('maml-omniglot-5w1s'), r['name'])")
    assert result.returncode == 0, result.stderr[-2000:]
    path, name = result.stdout.split()
    assert name == "maml-omniglot-5w1s" and path.startswith(str(run.site / "mlcourse" / "stored_results"))
