import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers, reliability_hooks

from mmeomt.datasets.synthetic import generate_synthetic_dataset  # noqa: E402


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> str:
    """8 training and 2 validation scenes (shared, read-only: tests that break files copy)."""
    root = str(tmp_path_factory.mktemp('reliability') / 'data')
    generate_synthetic_dataset(root, num_train=8, num_val=2, seed=0)
    return root
