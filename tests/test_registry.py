"""The registry design: mmeomt modules resolve unambiguously from mmdet and mmseg scopes."""
import pytest
from mmengine.registry import init_default_scope


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_prefixed_names_resolve_in_host_scopes(scope):
    from mmengine.registry import MODELS

    from mmeomt.models import EoMT
    init_default_scope(scope)
    with MODELS.switch_scope_and_registry(scope) as registry:
        assert registry.scope == scope
        assert registry.get('mmeomt.EoMT') is EoMT
        # The host library's own modules keep their unprefixed names.
        assert registry.get('CrossEntropyLoss').__module__.startswith(scope)
        # mmdet's loss is reachable from mmseg scope only through its prefix.
        assert registry.get('mmdet.CrossEntropyLoss').__module__.startswith('mmdet')


def test_unprefixed_mmeomt_name_is_not_guessed_in_host_scope():
    from mmengine.registry import MODELS
    init_default_scope('mmdet')
    with MODELS.switch_scope_and_registry('mmdet') as registry:
        assert registry.get('EoMT') is None


def test_runner_builds_from_a_minimal_config_naming_mmeomt_modules(tmp_path):
    """What `tools/train.py` relies on: a plain mmengine Runner, mmdet scope, mmeomt modules by
    their prefixed names (model, optimiser constructor, scheduler, hook)."""
    from mmengine.config import Config
    from mmengine.registry import PARAM_SCHEDULERS
    from mmengine.runner import Runner

    from mmeomt.engine import MaskAnnealingHook, TwoStageWarmupPolyLR
    from mmeomt.models import EoMTDetector
    tiny = dict(
        type='mmeomt.EoMT',
        backbone=dict(type='mmeomt.EoMTViT', img_size=32,
                      arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                feedforward_channels=64)),
        num_classes=3, num_queries=4, num_blocks=1)
    cfg = Config(dict(
        default_scope='mmdet',
        custom_imports=dict(imports=['mmeomt'], allow_failed_imports=False),
        work_dir=str(tmp_path),
        model=dict(type='mmeomt.EoMTDetector', eomt=tiny,
                   loss=dict(type='mmeomt.EoMTLoss', num_points=16),
                   num_things_classes=2, num_stuff_classes=1,
                   data_preprocessor=dict(type='DetDataPreprocessor')),
        custom_hooks=[dict(type='mmeomt.MaskAnnealingHook', start_iters=[10], end_iters=[20])],
    ))
    runner = Runner.from_cfg(cfg)
    assert isinstance(runner.model, EoMTDetector)
    assert any(isinstance(h, MaskAnnealingHook) for h in runner.hooks)
    optim_wrapper = runner.optim_wrapper = runner.build_optim_wrapper(dict(
        constructor='mmeomt.EoMTOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)))
    scheduler = PARAM_SCHEDULERS.build(dict(
        type='mmeomt.TwoStageWarmupPolyLR', optimizer=optim_wrapper, end=3000, by_epoch=False))
    assert isinstance(scheduler, TwoStageWarmupPolyLR)
    assert {g['vit'] for g in optim_wrapper.optimizer.param_groups if 'vit' in g} == {True, False}
