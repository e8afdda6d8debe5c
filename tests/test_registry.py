"""The registry design: mmeomt modules resolve unambiguously from mmdet and mmseg scopes."""
import subprocess
import sys

import pytest
from mmengine.registry import init_default_scope


def test_openmmlab_stack_imports_in_one_process():
    # mmdet imports mmpretrain when it is installed; a transformers in the environment would break
    # that chain (ENVIRONMENT.md), so check all four in a clean interpreter.
    code = ('import mmdet.models, mmseg.models, mmpretrain.models, mmcv.ops, mmeomt, mmeomt.models;'
            'print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


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
