"""tests/reference.py: the reference implementations are installed and reachable.

The parity tests skip when ``.venv/reference`` is missing (a checkout without ``make setup``);
in CI that would hide them, so there its absence is a failure.
"""
import os

import pytest
import torch

from reference import REFERENCE_DIRS, run_reference


@pytest.mark.parametrize('folder', sorted(REFERENCE_DIRS))
def test_reference_folder_present_in_ci(folder):
    if os.environ.get('CI') != 'true':
        pytest.skip('enforced only in CI (CI=true)')
    assert REFERENCE_DIRS[folder].is_dir(), (
        f'{REFERENCE_DIRS[folder]} is missing: `make setup` installs the reference '
        'implementations there, and the parity tests would silently skip without it')


def test_run_reference_exchanges_tensors_with_the_pinned_versions(tmp_path):
    x = torch.randn(3, 4)
    out = run_reference('''
        import timm, transformers
        outputs['twice'] = 2 * inputs['x']
        outputs['versions'] = (timm.__version__, transformers.__version__)
        assert 'mmpretrain' not in sys.modules
    ''', tmp_path, inputs=dict(x=x))
    assert torch.equal(out['twice'], 2 * x)
    assert out['versions'] == ('1.0.31', '4.57.6')


def test_tf5_folder_holds_transformers_5_and_no_mmpretrain(tmp_path):
    """The DINOv3 references: transformers 5.x alone, not the 4.57.6 of the other folder."""
    out = run_reference('''
        import transformers
        from transformers import DINOv3ViTModel, EomtDinov3ForUniversalSegmentation
        outputs['version'] = transformers.__version__
        outputs['file'] = transformers.__file__
        assert 'mmpretrain' not in sys.modules
    ''', tmp_path, folder='reference-tf5')
    assert out['version'].startswith('5.')
    assert 'reference-tf5' in out['file']


def test_unknown_reference_folder():
    with pytest.raises(KeyError, match='reference-tf5'):
        run_reference('pass', '.', folder='tf6')
