"""The random number generators a training process draws from, as one picklable state.

Training draws from four generators in the main process: Python's ``random``, numpy's global
one, torch's CPU generator (masked-attention query draws, the loss's point sampling, dropout)
and, on a GPU, each CUDA device's generator; with ``num_workers=0`` the data pipeline draws
from the first three as well.  mmengine seeds them once at start and keeps none of them in a
checkpoint, so a resumed run continues with freshly seeded generators and parts company with
the uninterrupted run at the first random draw.  :class:`~mmeomt.engine.AtomicCheckpointHook`
stores :func:`capture` in every checkpoint and :func:`restore` s it on resume.

(Data-loader workers need nothing here: mmengine seeds each from the run's seed, its rank and
its worker id, and they replay the skipped batches on resume.)
"""
import random
from typing import Optional

import numpy as np
import torch

VERSION = 1


def capture() -> dict:
    """The state of every generator of this process (CUDA only where CUDA is initialised)."""
    cuda: Optional[list] = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [state.clone() for state in torch.cuda.get_rng_state_all()]
    return dict(version=VERSION, python=random.getstate(), numpy=np.random.get_state(),
                torch=torch.get_rng_state().clone(), cuda=cuda)


def restore(state: dict) -> Optional[str]:
    """Set every generator to ``state`` (from :func:`capture`).

    Returns:
        None, or why the CUDA generators were left alone (the checkpoint holds the states of
        another number of devices than this process sees).  A state captured before CUDA was
        initialised holds none: nothing had been drawn on a device, so there is nothing to set.
    """
    if state.get('version') != VERSION:
        raise ValueError(f'random state of version {state.get("version")!r}; this mmeomt '
                         f'reads version {VERSION}')
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is None:
        return None
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda) != here:
        return (f'the checkpoint holds the states of {len(cuda)} CUDA devices, this process '
                f'sees {here}')
    torch.cuda.set_rng_state_all(cuda)
    return None
