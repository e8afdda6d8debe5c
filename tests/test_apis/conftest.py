"""Fixtures of the model-zoo tests: a local HTTP server and an isolated download cache."""
import pytest

from apis_helpers import FileServer


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
