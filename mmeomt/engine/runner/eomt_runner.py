"""mmengine's ``Runner`` whose ``load_from`` and ``resume`` read checkpoints our way.

mmengine's ``Runner.load_checkpoint`` reads the file with mmengine's ``CheckpointLoader`` (a URL
cached by file name, a training checkpoint refused by torch >= 2.6's weights-only default,
no ``.safetensors``) and loads it non-strictly (missing and unexpected keys only warned
about).  :class:`EoMTRunner` reads it with :func:`mmeomt.models.checkpoint.load_checkpoint_file`
(per-URL cache, safe loading) and loads it strictly, without changing mmengine's loaders for the
other models of the process.  The configs select it with ``runner_type = 'mmeomt.EoMTRunner'``
(``configs/eomt/_base_/default_runtime.py``); ``tools/train.py`` and ``tools/test.py`` build
the config's runner type.
"""
from typing import Callable, Sequence, Tuple, Union

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmeomt.models.checkpoint import is_url, load_checkpoint_file, load_checkpoint_to_model
from mmeomt.registry import RUNNERS


@RUNNERS.register_module()
class EoMTRunner(Runner):
    """mmengine's ``Runner``; checkpoints are read by mmeomt's loading policy and loaded
    strictly (see the module docstring).  Every argument is mmengine's."""

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = True,
                        revise_keys: Sequence[Tuple[str, str]] = ((r'^module\.', ''), )):
        """Read ``filename`` and load it into the model; ``resume`` calls it as well.

        As mmengine's, but ``strict`` defaults to True (a checkpoint that does not fit fails
        with the keys named, instead of training or testing random weights), and a *local*
        file may hold more than tensors: the runner's own checkpoints hold mmengine's message
        hub, which the weights-only unpickler refuses.  It is then unpickled in full, with a
        warning (``allow_pickle``); files from URLs never are.
        """
        checkpoint = load_checkpoint_file(filename, map_location,
                                          allow_pickle=not is_url(filename))
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        load_checkpoint_to_model(model, checkpoint, strict, revise_keys, filename=filename)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
