"""A weights file that is no checkpoint (random bytes: torch.load raised UnicodeDecodeError or
UnpicklingError) is named, with what it looks like, wherever weights are loaded."""
import os

import pytest

from apis_helpers import CONFIGS
from helpers import run_tool, write_config


@pytest.fixture
def random_bytes(tmp_path):
    path = tmp_path / 'weights.pth'
    # Bytes on which torch.load fails with UnicodeDecodeError (a pickled "string" of 4 bytes
    # that are no UTF-8), followed by noise.
    path.write_bytes(b'\x80\x02X\x04\x00\x00\x00\xff\xfe\xfd\xfc.' + os.urandom(2000))
    return path


def test_tools_test_names_the_file(tmp_path, synthetic_root, random_bytes):
    config = write_config(str(tmp_path / 'cfg.py'), synthetic_root)
    done = run_tool(['test.py', config, str(random_bytes), '--work-dir', str(tmp_path / 'w')])
    assert done.returncode != 0
    assert f'ValueError: {random_bytes} is not a checkpoint: it is' in done.stderr


def test_the_inferencer_names_the_file(random_bytes):
    from mmeomt.apis import EoMTInferencer
    with pytest.raises(ValueError, match=f'{random_bytes} is not a checkpoint: it is'):
        EoMTInferencer(str(CONFIGS / 'eomt_tiny_panoptic.py'), weights=str(random_bytes),
                       device='cpu')
