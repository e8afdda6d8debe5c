"""TwoStageWarmupPolyLR: the lr of each group during iteration t is docs/method.md §4's formula;
warm-ups are given in iterations or as fractions of the schedule."""
import pytest
import torch
from mmengine.optim import OptimWrapper

from mmeomt.engine import EoMTOptimWrapperConstructor, TwoStageWarmupPolyLR

LR = 1e-4
W1, W2, T, POWER = 5, 10, 40, 0.9


def reference_lr(t: int, base: float, vit: bool) -> float:
    """The authors' TwoStageWarmupPolySchedule.get_lr for one group, restated."""
    if not vit:
        if t < W1:
            return base * t / W1
        return base * (1 - (t - W1) / (T - W1))**POWER
    if t < W1:
        return 0.0
    if t < W1 + W2:
        return base * (t - W1) / W2
    return base * (1 - (t - W1 - W2) / (T - W1 - W2))**POWER


def build(model):
    wrapper = EoMTOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR, weight_decay=0.05),
             clip_grad=dict(max_norm=0.01, norm_type=2)),
        dict(layer_decay_rate=0.8))(model)
    scheduler = TwoStageWarmupPolyLR(wrapper, warmup_iters=W1, vit_warmup_iters=W2,
                                     power=POWER, begin=0, end=T, by_epoch=False)
    return wrapper, scheduler


def assert_lrs_at(wrapper, t):
    for group in wrapper.optimizer.param_groups:
        expected = reference_lr(t, LR * group['lr_scale'], group['vit'])
        assert group['lr'] == pytest.approx(expected, abs=1e-15), (t, group['name'])


def train_iteration(model, wrapper, scheduler, images):
    """What mmengine's IterBasedTrainLoop + ParamSchedulerHook do for one iteration."""
    wrapper.update_params(model(images, mode='loss')['loss'])
    scheduler.step()


def test_lr_during_each_iteration_is_the_formula(tiny_model, images):
    wrapper, scheduler = build(tiny_model)
    for t in range(T):
        assert_lrs_at(wrapper, t)  # the lr iteration t runs with
        train_iteration(tiny_model, wrapper, scheduler, images)


@pytest.mark.parametrize('t', [0, 3, W1, W1 + 4, W1 + W2, T - 1])
def test_chosen_iterations(tiny_model, images, t):
    wrapper, scheduler = build(tiny_model)
    for _ in range(t):
        scheduler.step()
    assert_lrs_at(wrapper, t)
    head = wrapper.optimizer.param_groups[0]
    vit_top = wrapper.optimizer.param_groups[1]
    assert head['vit'] is False and vit_top['vit'] is True
    if t < W1:
        assert vit_top['lr'] == 0  # the ViT is frozen during the first warm-up
    # mmengine's logged base_lr follows the non-ViT curve.
    assert wrapper.get_lr()['base_lr'][0] == pytest.approx(reference_lr(t, LR, False))


@pytest.mark.parametrize('restore_optimizer', [True, False])
def test_resume_continues_the_formula(make_tiny_model, images, restore_optimizer):
    model = make_tiny_model()
    wrapper, scheduler = build(model)
    for _ in range(17):
        train_iteration(model, wrapper, scheduler, images)
    optim_state, sched_state = wrapper.state_dict(), scheduler.state_dict()

    # A fresh run built the same way (its scheduler sets the lr of step 0), then resumed in
    # the Runner's order: optimizer state first, scheduler state second.
    resumed_model = make_tiny_model(seed=1)
    resumed_wrapper, resumed_scheduler = build(resumed_model)
    assert_lrs_at(resumed_wrapper, 0)
    if restore_optimizer:
        resumed_wrapper.load_state_dict(optim_state)
    resumed_scheduler.load_state_dict(sched_state)
    for t in range(17, T):
        assert_lrs_at(resumed_wrapper, t)
        train_iteration(resumed_model, resumed_wrapper, resumed_scheduler, images)


def test_begin_offsets_the_schedule(tiny_model):
    wrapper, _ = build(tiny_model)
    TwoStageWarmupPolyLR(wrapper, warmup_iters=W1, vit_warmup_iters=W2, begin=0, end=T)
    scheduler = TwoStageWarmupPolyLR(wrapper, warmup_iters=2, vit_warmup_iters=3, begin=10,
                                     end=30)
    for _ in range(12):
        scheduler.step()
    # Global step 12 is step 2 of a 20-step schedule: non-ViT warmed up, ViT at (2-2)/3.
    head, vit_top = wrapper.optimizer.param_groups[:2]
    assert head['lr'] == pytest.approx(LR)
    assert vit_top['lr'] == 0


def test_bad_arguments_fail_clearly(tiny_model):
    wrapper, _ = build(tiny_model)
    with pytest.raises(ValueError, match='by_epoch'):
        TwoStageWarmupPolyLR(wrapper, end=T, by_epoch=True)
    with pytest.raises(ValueError, match='finite `end`'):
        TwoStageWarmupPolyLR(wrapper)
    with pytest.raises(ValueError, match='shorter than'):
        TwoStageWarmupPolyLR(wrapper, warmup_iters=10, vit_warmup_iters=30, end=T)
    plain = OptimWrapper(torch.optim.AdamW(
        [dict(params=[p]) for p in tiny_model.parameters()], lr=LR))
    with pytest.raises(KeyError, match="'vit' tag"):
        TwoStageWarmupPolyLR(plain, warmup_iters=W1, vit_warmup_iters=W2, end=T)


def test_warmups_as_fractions_of_the_schedule(tiny_model):
    wrapper, reference = build(tiny_model)
    # W1 = 5 and W2 = 10 of T = 40 iterations.
    scheduler = TwoStageWarmupPolyLR(wrapper, warmup_fraction=W1 / T, vit_warmup_fraction=W2 / T,
                                     power=POWER, begin=0, end=T)
    assert (scheduler.warmup_iters, scheduler.vit_warmup_iters) == (W1, W2)
    # Fractions of end - begin, rounded half up: 0.1 of 25 is 2.5 -> 3.
    offset = TwoStageWarmupPolyLR(wrapper, warmup_fraction=0.1, vit_warmup_fraction=0.2,
                                  begin=15, end=40)
    assert (offset.warmup_iters, offset.vit_warmup_iters) == (3, 5)
    # One stage in iterations, the other as a fraction; neither: the authors' 500 and 1000.
    mixed = TwoStageWarmupPolyLR(wrapper, warmup_iters=4, vit_warmup_fraction=0.5, end=T)
    assert (mixed.warmup_iters, mixed.vit_warmup_iters) == (4, 20)
    default = TwoStageWarmupPolyLR(wrapper, end=10000)
    assert (default.warmup_iters, default.vit_warmup_iters) == (500, 1000)


def test_bad_warmups_name_the_field(tiny_model):
    wrapper, _ = build(tiny_model)
    with pytest.raises(ValueError, match=r'warmup_iters or warmup_fraction, not both'):
        TwoStageWarmupPolyLR(wrapper, warmup_iters=5, warmup_fraction=0.1, end=T)
    with pytest.raises(ValueError, match=r'\.vit_warmup_fraction must be a float in \[0, 1\)'):
        TwoStageWarmupPolyLR(wrapper, vit_warmup_fraction=1.0, end=T)
    with pytest.raises(ValueError, match=r'\.warmup_fraction must be a float'):
        TwoStageWarmupPolyLR(wrapper, warmup_fraction=5, end=T)  # an int is no fraction
    with pytest.raises(ValueError, match=r'\.warmup_iters must be an int'):
        TwoStageWarmupPolyLR(wrapper, warmup_iters=0.1, end=T)  # a float is no iteration
    with pytest.raises(ValueError, match='shorter than'):
        TwoStageWarmupPolyLR(wrapper, warmup_fraction=0.5, vit_warmup_fraction=0.5, end=T)
