"""``CheckpointHook`` whose checkpoints are complete or absent and hold the whole training state.

* **Atomic files** (:mod:`mmeomt.utils.atomic_io`): written to a temporary file and renamed
  into place, with the usual file mode; temporaries left by a killed save are removed when
  training starts and before every save.
* **Exact resume**: every checkpoint also holds the random generators of every rank
  (:mod:`mmeomt.engine.random_state`), and a resumed run sets them back at the moment the
  uninterrupted run had them, so it draws the same masked-attention queries, loss points and
  (with ``num_workers=0``) augmentations, and ends with the same weights.  mmengine's
  checkpoint already holds the model, the optimiser (with the AMP loss scaler), the schedulers
  and the message hub; the seed and thereby the sampler order and the data-loader workers'
  seeds come from the config (``tools/train.py --resume`` takes the checkpoint's seed).
* **Validation leaves no trace** in the training random state: the generators are captured
  before and restored after every validation, so a run validated at other iterations (e.g. a
  resumed one, which does not repeat the validations before its checkpoint) draws the same
  training random numbers.
"""
from typing import Optional

from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmeomt.engine import random_state
from mmeomt.registry import HOOKS
from mmeomt.utils.atomic_io import (ATOMIC_BACKEND, register_atomic_backend,
                                    remove_stale_temporaries)

RANDOM_STATE_KEY = 'random_state'


class _RestoreBeforeBatch:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator``: calls ``restore`` right before batch
    ``skip`` is fetched, i.e. after mmengine re-reads the ``skip`` batches a resumed run has
    already trained on and before the first new one, then puts the plain iterator back."""

    def __init__(self, loop, skip: int, restore):
        self._loop, self._iterator = loop, loop.dataloader_iterator
        self._remaining, self._restore = skip, restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._remaining == 0:
            self._restore()
            self._loop.dataloader_iterator = self._iterator
        self._remaining -= 1
        return next(self._iterator)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, atomic and with the random state for exact resume.

    All arguments but ``save_random_state`` are mmengine's.  When neither ``backend_args`` nor
    ``file_client_args`` is given and ``out_dir`` is local (or unset, i.e. the work dir),
    checkpoint files are written through :class:`~mmeomt.utils.atomic_io.AtomicLocalBackend`
    (registered with mmengine's file backends when this hook is built);
    remote ``out_dir``s keep their own backend.

    Args:
        save_random_state: store every rank's random generators in ``meta['random_state']``
            (``dict(world_size=W, states=[state of rank 0, ...])``) and restore them on resume.

    The small ``last_checkpoint`` pointer is still written by mmengine directly;
    ``tools/train.py --resume auto`` falls back to the newest intact ``iter_*.pth`` if that
    pointer is unusable.
    """

    def __init__(self, *args, out_dir: Optional[str] = None,
                 backend_args: Optional[dict] = None, file_client_args: Optional[dict] = None,
                 save_random_state: bool = True, **kwargs):
        is_local = out_dir is None or '://' not in str(out_dir)
        if backend_args is None and file_client_args is None and is_local:
            register_atomic_backend()
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, out_dir=out_dir, backend_args=backend_args,
                         file_client_args=file_client_args, **kwargs)
        self.save_random_state = save_random_state
        self._state_before_val: Optional[dict] = None
        self._loaded: Optional[dict] = None  # meta of the last loaded checkpoint

    # --- leftovers of interrupted saves ---------------------------------------------------

    def _remove_stale_temporaries(self, runner) -> None:
        if not is_main_process() or not isinstance(self.file_backend, LocalBackend):
            return
        removed = remove_stale_temporaries(self.out_dir)
        if removed:
            runner.logger.warning(
                f'Removed {len(removed)} temporary file(s) left in {self.out_dir} by an '
                f'interrupted checkpoint save: {", ".join(removed)}')

    # --- saving ---------------------------------------------------------------------------

    def _gather_random_state(self) -> dict:
        # Inside a validation (a best checkpoint) the state training continues with is the
        # one from before the validation (after_val puts it back).
        state = self._state_before_val or random_state.capture()
        _, world_size = get_dist_info()
        states = all_gather_object(state) if world_size > 1 else [state]
        return dict(world_size=world_size, states=states)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # Called on every rank (mmengine saves on rank 0 only), so the gather can run here.
        if self.save_random_state:
            meta = dict(meta, **{RANDOM_STATE_KEY: self._gather_random_state()})
        self._remove_stale_temporaries(runner)
        super()._save_checkpoint_with_step(runner, step, meta)

    # --- validation -----------------------------------------------------------------------

    def before_val(self, runner) -> None:
        self._state_before_val = random_state.capture()

    def after_val(self, runner) -> None:
        if self._state_before_val is not None:
            random_state.restore(self._state_before_val)
            self._state_before_val = None

    # --- resuming -------------------------------------------------------------------------

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta')
        self._loaded = meta if isinstance(meta, dict) else None

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._remove_stale_temporaries(runner)
        loaded, self._loaded = self._loaded, None
        # A resumed run starts at the checkpoint's iteration (epoch); a run that only loaded
        # weights from a training checkpoint (load_from) starts at 0 and keeps its seeding.
        if (loaded is None or (runner.iter, runner.epoch) == (0, 0)
                or (loaded.get('iter'), loaded.get('epoch')) != (runner.iter, runner.epoch)):
            return
        saved = loaded.get(RANDOM_STATE_KEY)
        rank, world_size = get_dist_info()
        if saved is None:
            runner.logger.warning(
                'The resumed checkpoint holds no random state (it was written without mmeomt\'s '
                'AtomicCheckpointHook or with save_random_state=False): from here on the run '
                'draws other random numbers than the uninterrupted run would have.')
            return
        if saved.get('world_size') != world_size:
            runner.logger.warning(
                f'The resumed checkpoint holds the random state of {saved.get("world_size")} '
                f'processes, this run has {world_size}: the random generators keep their '
                'seeding, so the run cannot continue exactly as the uninterrupted one.')
            return
        state = saved['states'][rank]

        def restore() -> None:
            problem = random_state.restore(state)
            message = f'Restored the random generators of iteration {runner.iter}'
            if problem is not None:
                runner.logger.warning(f'{message}, but not the CUDA ones: {problem}')
            else:
                runner.logger.info(message)

        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator') and runner.iter > 0:
            # IterBasedTrainLoop re-reads the trained batches before the first new one; with
            # num_workers=0 that draws from the generators, so they are set after it.
            loop.dataloader_iterator = _RestoreBeforeBatch(loop, runner.iter, restore)
        else:
            restore()
