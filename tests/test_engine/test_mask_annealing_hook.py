"""MaskAnnealingHook: attn_mask_probs during iteration t is docs/method.md §2's p_k(t), also after
a resume, in a real runner (EoMTRunner: mmengine's, reading checkpoints our way; with the
constructor, the scheduler and atomic checkpoints); windows given as fractions of the run are
resolved from its max_iters."""

import math

import pytest
import torch
from mmengine.hooks import Hook

from mmeomt.engine import EoMTRunner, MaskAnnealingHook, annealed_prob
from mmeomt.engine.schedule_fractions import fraction_to_iter

START, END = [2, 4], [6, 10]
MAX_ITERS, CKPT = 12, 6
W1, W2 = 2, 3


def reference_prob(it, start, end, power=0.9):
    """The authors' mask_annealing(start, step, end), restated."""
    if it < start:
        return 1.0
    if it >= end:
        return 0.0
    return (1 - (it - start) / (end - start))**power


def test_annealed_prob_at_chosen_iterations():
    for it in [0, 1, 2, 3, 5, 6, 7, 100]:
        assert annealed_prob(it, 2, 6) == pytest.approx(reference_prob(it, 2, 6))
    assert annealed_prob(2, 2, 6) == 1.0  # exactly 1 at the start ...
    assert annealed_prob(6, 2, 6) == 0.0  # ... and 0 from the end on
    assert annealed_prob(4, 2, 6) == pytest.approx(0.5**0.9)
    assert annealed_prob(4, 2, 6, power=1.0) == pytest.approx(0.5)


def test_arguments_are_validated():
    with pytest.raises(ValueError, match='same length'):
        MaskAnnealingHook([1, 2], [3])
    with pytest.raises(ValueError, match=r'block\(s\) \[1\]'):
        MaskAnnealingHook([1, 5], [3, 5])
    with pytest.raises(TypeError, match='mask_annealing.start_iters'):
        MaskAnnealingHook(None, [3])
    with pytest.raises(ValueError, match='power'):
        MaskAnnealingHook([1], [3], power=0)


def test_windows_are_iterations_or_fractions_never_both():
    with pytest.raises(ValueError, match='not both'):
        MaskAnnealingHook([1], [3], start_fractions=[0.1], end_fractions=[0.3])
    with pytest.raises(ValueError, match='not both'):  # a pair split across the two kinds
        MaskAnnealingHook(start_iters=[1], end_fractions=[0.3])
    with pytest.raises(ValueError, match='not neither'):
        MaskAnnealingHook()
    # Ints are never fractions, floats never iterations, and a list does not mix them.
    with pytest.raises(TypeError, match=r'mask_annealing\.start_fractions must be .*floats'):
        MaskAnnealingHook(start_fractions=[1, 0.5], end_fractions=[1.0, 0.75])
    with pytest.raises(TypeError, match=r'mask_annealing\.end_iters must be .*ints'):
        MaskAnnealingHook(start_iters=[1, 2], end_iters=[3, 4.0])
    with pytest.raises(TypeError, match=r'\[0, 1\]'):
        MaskAnnealingHook(start_fractions=[0.5], end_fractions=[1.5])
    with pytest.raises(TypeError, match='start_fractions'):
        MaskAnnealingHook(start_fractions=[-0.1], end_fractions=[0.5])
    with pytest.raises(ValueError, match=r'start_fractions\[k\] < end_fractions\[k\]'):
        MaskAnnealingHook(start_fractions=[0.5], end_fractions=[0.5])


def test_fractions_resolve_when_the_run_length_is_known():
    hook = MaskAnnealingHook(start_fractions=[1 / 6, 7 / 24], end_fractions=[2 / 6, 11 / 24])
    with pytest.raises(RuntimeError, match='before_train'):
        hook.probs(0)
    # Round half up: 7/24 and 11/24 of 88,692 are 25,868.5 and 40,650.5.
    assert hook.resolve(88692) == ([14782, 25869], [29564, 40651])
    assert hook.resolve(1100) == ([183, 321], [367, 504])
    # Windows in iterations do not depend on the run.
    assert MaskAnnealingHook([2], [6]).resolve(1000) == ([2], [6])
    # A window shorter than an iteration: the mask drops at once.
    assert MaskAnnealingHook(start_fractions=[0.5], end_fractions=[0.6]).resolve(3) == ([2],
                                                                                          [2])
    assert [annealed_prob(it, 2, 2) for it in range(4)] == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize('total', [1, 7, 1100, 88692, 177384])
def test_fraction_to_iter_is_round_half_up_on_the_exact_fraction(total):
    for num, den in [(1, 6), (7, 24), (11, 24), (5, 12), (2, 3), (5, 6), (1, 2), (0, 1), (1, 1)]:
        expected = (2 * num * total + den) // (2 * den)  # floor(num * total / den + 1/2)
        assert fraction_to_iter(num / den, total) == expected, (num, den)
    # The float's last bit does not matter: the neighbours of 7/24 land on either side of the
    # tie 25,868.5, yet resolve like 7/24 itself.
    for near in (math.nextafter(7 / 24, 0), 7 / 24, math.nextafter(7 / 24, 1)):
        assert fraction_to_iter(near, 88692) == 25869


class Recorder(Hook):
    """Records what iteration ``runner.iter`` runs with (after every other before-hook)."""

    priority = 'LOWEST'

    def __init__(self):
        self.before_train_probs = None
        self.iters = {}

    def _core(self, runner):
        return runner.model.eomt

    def before_train(self, runner):
        self.before_train_probs = self._core(runner).attn_mask_probs.tolist()

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        scalars = runner.message_hub.log_scalars
        self.iters[runner.iter] = dict(
            probs=self._core(runner).attn_mask_probs.tolist(),
            logged=[scalars[f'train/attn_mask_prob_{k}'].current() for k in range(len(START))],
            groups=[(g['vit'], g['lr_scale']) for g in runner.optim_wrapper.optimizer.param_groups],
            lrs=[g['lr'] for g in runner.optim_wrapper.optimizer.param_groups])


def make_runner(model, dataset, work_dir, recorder, annealing=None, **kwargs):
    return EoMTRunner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset,
            # Infinite: mmengine sleeps 2 s each time a finite dataloader is exhausted.
            sampler=dict(type='InfiniteSampler', shuffle=False),
            batch_size=2,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            constructor='mmeomt.EoMTOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            paramwise_cfg=dict(layer_decay_rate=0.8),
            clip_grad=dict(max_norm=0.01, norm_type=2)),
        # No `end`: the Runner fills in max_iters, as in the published configs.
        param_scheduler=[dict(type='mmeomt.TwoStageWarmupPolyLR', warmup_iters=W1,
                              vit_warmup_iters=W2, by_epoch=False)],
        train_cfg=dict(by_epoch=False, max_iters=MAX_ITERS),
        default_hooks=dict(
            checkpoint=dict(type='mmeomt.AtomicCheckpointHook', by_epoch=False,
                            interval=CKPT),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[
            dict(type='mmeomt.MaskAnnealingHook', **(annealing or dict(start_iters=START,
                                                                         end_iters=END))),
            recorder
        ],
        default_scope='mmdet',
        log_level='WARNING',
        **kwargs)


def expected_probs(it):
    return [reference_prob(it, s, e) for s, e in zip(START, END)]


def expected_lr(it, vit, lr_scale):
    base = 1e-4 * lr_scale
    if not vit:
        return base * it / W1 if it < W1 else base * (1 - (it - W1) / (MAX_ITERS - W1))**0.9
    if it < W1:
        return 0.0
    if it < W1 + W2:
        return base * (it - W1) / W2
    return base * (1 - (it - W1 - W2) / (MAX_ITERS - W1 - W2))**0.9


def test_runner_anneals_logs_and_resumes(make_tiny_model, random_images, tmp_path):
    first = Recorder()
    make_runner(make_tiny_model(), random_images(4), tmp_path / 'run', first).train()
    assert sorted(first.iters) == list(range(MAX_ITERS))
    for it, seen in first.iters.items():
        assert seen['probs'] == pytest.approx(expected_probs(it)), it
        assert seen['logged'] == pytest.approx(expected_probs(it)), it
        for (vit, lr_scale), lr in zip(seen['groups'], seen['lrs']):
            assert lr == pytest.approx(expected_lr(it, vit, lr_scale), abs=1e-15), it

    # The checkpoints are complete files and no temporary file is left behind.
    run_dir = tmp_path / 'run'
    assert sorted(p.name for p in run_dir.glob('*.pth')) == ['iter_12.pth', 'iter_6.pth']
    assert not [p for p in run_dir.iterdir() if p.name.endswith('.tmp')]
    checkpoint = torch.load(run_dir / 'iter_6.pth', map_location='cpu', weights_only=False)
    assert checkpoint['meta']['iter'] == CKPT
    # The buffer in the checkpoint is that of the last iteration before it (5) ...
    assert checkpoint['state_dict']['eomt.attn_mask_probs'].tolist() == pytest.approx(
        expected_probs(CKPT - 1))

    # ... and a resumed run starts with the probabilities (and lrs) of iteration 6.
    resumed = Recorder()
    make_runner(make_tiny_model(seed=1), random_images(4), tmp_path / 'resumed', resumed,
                load_from=str(run_dir / 'iter_6.pth'), resume=True).train()
    assert resumed.before_train_probs == pytest.approx(expected_probs(CKPT))
    assert sorted(resumed.iters) == list(range(CKPT, MAX_ITERS))
    for it, seen in resumed.iters.items():
        assert seen['probs'] == pytest.approx(first.iters[it]['probs']), it
        assert seen['lrs'] == pytest.approx(first.iters[it]['lrs']), it


def test_runner_resolves_fractions_from_max_iters(make_tiny_model, random_images, tmp_path):
    """START/END as fractions of MAX_ITERS give the same probabilities as the iterations."""
    recorder = Recorder()
    fractions = dict(start_fractions=[s / MAX_ITERS for s in START],
                     end_fractions=[e / MAX_ITERS for e in END])
    runner = make_runner(make_tiny_model(), random_images(2), tmp_path, recorder,
                         annealing=fractions)
    runner.train()
    [hook] = [h for h in runner.hooks if isinstance(h, MaskAnnealingHook)]
    assert (hook.start_iters, hook.end_iters) == (START, END)
    for it, seen in recorder.iters.items():
        assert seen['probs'] == pytest.approx(expected_probs(it)), it


def test_mismatched_num_blocks_is_reported(make_tiny_model, random_images, tmp_path):
    runner = make_runner(make_tiny_model(num_blocks=1), random_images(2), tmp_path, Recorder())
    with pytest.raises(ValueError, match='num_blocks=1'):
        runner.train()
