"""Run reference implementations (timm 1.0.31, transformers 4.57.6 or 5.x) in a subprocess.

They live in folders of their own rather than in the environment because transformers breaks
``import mmpretrain`` in the same process: ``<repo>/.venv/reference`` holds timm and
transformers 4.57.6 (``requirements/reference.txt``), ``<repo>/.venv/reference-tf5``
transformers 5.x with the DINOv3 models (``requirements/reference-tf5.txt``); ``folder`` picks
one.  A snippet runs with that folder first on
``PYTHONPATH`` and the test's own interpreter; tensors go both ways through ``torch.save`` files
in the test's ``tmp_path``::

    out = run_reference('''
        import timm
        model = timm.create_model(...)
        outputs['tokens'] = model.forward_features(inputs['images'])
    ''', tmp_path, inputs={'images': images})
    out['tokens']  # a Tensor, back in the test process

Inside the snippet ``inputs`` is the dict given here (loaded with ``torch.load``), ``outputs`` an
empty dict to fill, ``work_dir`` the ``tmp_path`` (a ``pathlib.Path``).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / '.venv' / 'reference'
#: the reference folders by name (``run_reference(..., folder=...)``)
REFERENCE_DIRS = {
    'reference': REFERENCE_DIR,
    'reference-tf5': REPO / '.venv' / 'reference-tf5',
}

_PRELUDE = '''\
import sys
from pathlib import Path
import torch
torch.manual_seed(0)
work_dir = Path(sys.argv[1])
inputs = torch.load(work_dir / 'reference_inputs.pt', weights_only=False)
outputs = {}
'''
_EPILOGUE = '''
torch.save(outputs, work_dir / 'reference_outputs.pt')
'''


def require_reference(folder: str = 'reference') -> Path:
    """The reference folder, or skip the calling test when it is missing (set-up not run)."""
    if folder not in REFERENCE_DIRS:
        raise KeyError(f'unknown reference folder {folder!r}; known: {sorted(REFERENCE_DIRS)}')
    path = REFERENCE_DIRS[folder]
    if not path.is_dir():
        pytest.skip(f'reference implementations not installed at {path} (run `make setup`)')
    return path


def run_reference(snippet: str, tmp_path: Path, inputs: Optional[Dict[str, Any]] = None,
                  timeout: float = 300, folder: str = 'reference') -> Dict[str, Any]:
    """Run ``snippet`` against the reference packages and return its ``outputs`` dict.

    Args:
        snippet: Python source (dedented here); see the module docstring for its names.
        tmp_path: a directory private to the test (files are written there).
        inputs: objects ``torch.save`` can write (tensors, state dicts, numbers...).
        timeout: seconds before the subprocess is killed.
        folder: a name of :data:`REFERENCE_DIRS`: ``'reference'`` (timm, transformers 4.57.6)
            or ``'reference-tf5'`` (transformers 5.x).

    Raises:
        AssertionError: the snippet failed; the message holds its output.
    """
    path = require_reference(folder)
    tmp_path = Path(tmp_path)
    torch.save(dict(inputs or {}), tmp_path / 'reference_inputs.pt')
    script = tmp_path / 'reference_script.py'
    script.write_text(_PRELUDE + textwrap.dedent(snippet) + _EPILOGUE)
    env = dict(os.environ, PYTHONPATH=str(path), HF_HUB_OFFLINE='1',
               TRANSFORMERS_OFFLINE='1', TRANSFORMERS_VERBOSITY='error',
               TOKENIZERS_PARALLELISM='false')
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f'reference snippet failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}')
    return torch.load(tmp_path / 'reference_outputs.pt', weights_only=False)
