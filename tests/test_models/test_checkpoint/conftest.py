"""Fixtures of the checkpoint tests: a local HTTP server, an isolated download cache and the
synthetic dataset the tools run on."""
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # dinov2_formats
sys.path.insert(0, str(TESTS / 'test_apis'))  # apis_helpers: FileServer, the tiny configs
sys.path.insert(0, str(TESTS / 'test_reliability'))  # helpers: run_tool, write_config

from apis_helpers import FileServer  # noqa: E402


@pytest.fixture
def server(tmp_path):
    srv = FileServer(tmp_path / 'served')
    srv.root.mkdir()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    """Downloads go to a fresh cache: ``$TORCH_HOME/hub/checkpoints/mmeomt``."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    return tmp_path / 'torch_home'


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> str:
    """8 training and 2 validation scenes."""
    from mmeomt.datasets.synthetic import generate_synthetic_dataset
    root = str(tmp_path_factory.mktemp('checkpoint') / 'data')
    generate_synthetic_dataset(root, num_train=8, num_val=2, seed=0)
    return root
