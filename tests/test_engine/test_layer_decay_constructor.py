"""EoMTOptimWrapperConstructor: the lr of every parameter is docs/method.md §3's layer-wise decay,
and AdamW is torch's fused one unless the config chooses."""
import pytest
import torch
from mmengine.optim import OptimWrapper

from mmeomt.engine import AmpOptimWrapper, EoMTOptimWrapperConstructor, has_accelerator

LR, WD, DECAY = 1e-4, 0.05, 0.8
N = 3  # ViT blocks of the tiny model


def build(model, wrapper_type='OptimWrapper', paramwise_cfg=dict(layer_decay_rate=DECAY),
          **optimizer):
    optimizer = dict(dict(type='AdamW', lr=LR, weight_decay=WD), **optimizer)
    constructor = EoMTOptimWrapperConstructor(
        dict(type=wrapper_type, optimizer=optimizer, clip_grad=dict(max_norm=0.01, norm_type=2)),
        paramwise_cfg)
    return constructor(model)


def expected_lr_scale(name: str) -> float:
    """docs/method.md §3 / the authors' configure_optimizers, written out per parameter name."""
    if not name.startswith('eomt.backbone.'):
        return 1.0  # queries, class head, mask head, upscale
    rest = name[len('eomt.backbone.'):]
    if rest.startswith('layers.'):
        i = int(rest.split('.')[1])
        return DECAY**(N - 1 - i)
    if rest.startswith('ln1.'):
        return 1.0  # final norm
    assert rest.split('.')[0] in ('cls_token', 'register_tokens', 'pos_embed', 'patch_embed')
    return DECAY**(N - 1)


def test_every_parameter_gets_its_layer_decayed_lr(tiny_model):
    wrapper = build(tiny_model)
    assert type(wrapper) is OptimWrapper
    assert isinstance(wrapper.optimizer, torch.optim.AdamW)
    assert wrapper.clip_grad_kwargs == dict(max_norm=0.01, norm_type=2)
    groups = wrapper.optimizer.param_groups
    group_of = {id(p): g for g in groups for p in g['params']}
    names = dict(tiny_model.named_parameters())
    # Every trainable parameter in exactly one group.
    assert len(group_of) == sum(len(g['params']) for g in groups) == len(names)
    for name, param in names.items():
        group = group_of[id(param)]
        assert group['lr'] == pytest.approx(LR * expected_lr_scale(name)), name
        assert group['lr_scale'] == pytest.approx(expected_lr_scale(name)), name
        # The authors decay every parameter, norms and tokens included.
        assert group['weight_decay'] == WD, name
        # The whole ViT (its final norm included) follows the ViT warm-up, as the authors'.
        assert group['vit'] is name.startswith('eomt.backbone.'), name


def test_groups_are_merged_per_lr_class_and_named(tiny_model):
    groups = build(tiny_model).optimizer.param_groups
    assert [g['name'] for g in groups] == [
        'eomt.queries+eomt.class_head+eomt.mask_head+eomt.upscale',
        'eomt.backbone[layers.2+ln1]',
        'eomt.backbone[layers.1]',
        'eomt.backbone[stem+layers.0]',
    ]
    # Group 0 (the lr mmengine logs) is the non-ViT base lr.
    assert groups[0]['vit'] is False and groups[0]['lr'] == LR
    assert [g['vit'] for g in groups[1:]] == [True] * 3


def test_frozen_parameters_are_left_out(tiny_model):
    tiny_model.eomt.backbone.cls_token.requires_grad_(False)
    params = [p for g in build(tiny_model).optimizer.param_groups for p in g['params']]
    assert all(p is not tiny_model.eomt.backbone.cls_token for p in params)


def test_bad_configs_fail_clearly(tiny_model):
    with pytest.raises(ValueError, match='layer_decay_rate'):
        build(tiny_model, paramwise_cfg=dict(layer_decay_rate=0))
    with pytest.raises(ValueError, match='weight_decay'):
        EoMTOptimWrapperConstructor(dict(type='OptimWrapper', optimizer=dict(type='AdamW',
                                                                              lr=LR)))
    with pytest.raises(RuntimeError, match='EoMTViT'):
        build(torch.nn.Linear(2, 2))


def test_default_decay_is_the_papers(tiny_model):
    groups = build(tiny_model, paramwise_cfg=None).optimizer.param_groups
    assert min(g['lr_scale'] for g in groups) == pytest.approx(0.8**(N - 1))


@pytest.mark.parametrize('optimizer, fused, foreach', [
    (dict(), True, None),  # the default: fused
    (dict(fused=False), False, None),  # a config's own choice is kept
    (dict(foreach=True), None, True),
    (dict(type='Adam'), True, None),
    (dict(type='SGD', momentum=0.9), None, None),  # other optimizers are left alone
])
def test_adam_is_fused_unless_the_config_chooses(tiny_model, optimizer, fused, foreach):
    groups = build(tiny_model, **optimizer).optimizer.param_groups
    assert {(g.get('fused'), g.get('foreach')) for g in groups} == {(fused, foreach)}


def group_names(model, groups):
    """Each group's parameters by name."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [[name_of[id(p)] for p in g['params']] for g in groups]


def test_fused_adamw_keeps_the_groups_and_steps_as_the_loop(make_tiny_model, images):
    fused_model, loop_model = make_tiny_model(), make_tiny_model()
    fused, loop = build(fused_model), build(loop_model, fused=False)
    fused_groups, loop_groups = fused.optimizer.param_groups, loop.optimizer.param_groups
    assert group_names(fused_model, fused_groups) == group_names(loop_model, loop_groups)
    for fused_group, loop_group in zip(fused_groups, loop_groups):
        assert fused_group['fused'] is True and loop_group['fused'] is False
        # name, vit, lr, lr_scale, weight_decay, betas, ...: all as without fusing.
        assert ({k: v for k, v in fused_group.items() if k not in ('params', 'fused')} ==
                {k: v for k, v in loop_group.items() if k not in ('params', 'fused')})
    before = [p.detach().clone() for p in loop_model.parameters()]
    for model, wrapper in ((fused_model, fused), (loop_model, loop)):
        wrapper.update_params(model(images, mode='loss')['loss'])  # clipping included
    for p, q, b in zip(fused_model.parameters(), loop_model.parameters(), before):
        assert not torch.equal(q, b)  # every parameter moved ...
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)  # ... the same way


@pytest.mark.skipif(has_accelerator(), reason='checks the CPU path of AmpOptimWrapper')
def test_amp_optim_wrapper_runs_bfloat16_on_cpu(tiny_model, images):
    wrapper = build(tiny_model, wrapper_type='mmeomt.AmpOptimWrapper')
    assert isinstance(wrapper, AmpOptimWrapper) and wrapper.cast_dtype == torch.bfloat16
    before = [p.detach().clone() for p in tiny_model.parameters()]
    with wrapper.optim_context(tiny_model):
        mask_logits, _ = tiny_model.eomt(images)
        loss = tiny_model(images, mode='loss')['loss']
    assert mask_logits[-1].dtype == torch.bfloat16
    wrapper.update_params(loss)
    after = list(tiny_model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    # Group 0 (heads, lr 1e-4) moved; state dict round-trips.
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    wrapper.load_state_dict(wrapper.state_dict())
    with pytest.raises(ValueError, match='bfloat16'):
        AmpOptimWrapper(optimizer=torch.optim.SGD(tiny_model.parameters(), lr=0.1),
                        dtype='float16')
