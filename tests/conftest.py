from pathlib import Path

import pytest
import torch

from mlcourse import runtime

ROOT = Path(__file__).resolve().parents[1]

# The tests use small tensors: one thread per test process avoids oversubscribing the cores when
# pytest-xdist runs several processes.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _checkpoints_outside_the_checkout(tmp_path, monkeypatch):
    """Reproductions checkpoint into ./checkpoints by default; a test run must leave nothing there
    that a later run (or the user's own run) would refuse to overwrite."""
    monkeypatch.setenv("MLCOURSE_CHECKPOINTS", str(tmp_path / "checkpoints"))


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The folder with the two official Omniglot zips, $MLCOURSE_DATA/omniglot (make sets
    MLCOURSE_DATA to ../shared/data where it exists; elsewhere the zips are downloaded once)."""
    from mlcourse.tasks import load_omniglot

    folder = runtime.data_dir() / "omniglot"
    load_omniglot(folder, device="cpu")  # downloads what is missing, with a clear error offline
    return folder


@pytest.fixture(scope="session")
def omniglot(omniglot_dir):
    from mlcourse.tasks import load_omniglot

    return load_omniglot(omniglot_dir, device="cpu")
