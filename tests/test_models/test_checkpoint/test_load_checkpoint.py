"""Whole-model checkpoints load into EoMTDetector / EoMTSegmentor in any format, or fail loudly.

What it promises (mmeomt.models.checkpoint: the pre-hook every EoMT module carries, and the
loading paths):
* the authors' released layout, transformers' ``EomtForUniversalSegmentation`` layout, a bare
  ``EoMT`` core and our own checkpoints load through mmengine's ``load_checkpoint``, through
  ours (the path of ``load_from``, ``resume``, ``init_cfg`` and the inferencers) and through
  ``load_state_dict``, giving the source model's weights and outputs; a checkpoint of another
  crop has its position grid resized;
* our loading paths are strict: anything that does not fit raises ``ValueError`` listing the
  missing, unexpected and mis-shaped keys, instead of mmengine's warning and random weights;
* ``load_state_dict(strict=False)`` behaves as torch documents: the keys that do not fit are
  reported, not raised; ``strict=True`` raises torch's error;
* ``skip_mismatched=['eomt.class_head']`` lets a checkpoint with another class count (or none)
  initialise everything else, strictly or not, while a class head that fits (resuming) still
  loads.
"""
import importlib.util
import logging
import re
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_checkpoint
from torch import nn

from mmeomt.models.backbones.resample import resample_pos_embed
from mmeomt.models.checkpoint import load_checkpoint as load_strictly
from mmeomt.models.checkpoint import load_checkpoint_to_model
from mmeomt.registry import MODELS
from dinov2_formats import eomt_to_authors, randomise

# The reverse of the 'transformers' conversion rules, as the benchmark uses it.
_spec = importlib.util.spec_from_file_location(
    'eomt_to_transformers',
    Path(__file__).resolve().parents[3] / 'tools' / 'analysis_tools' / 'eomt_to_transformers.py')
_REVERSE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_REVERSE)

VIT = dict(type='mmeomt.EoMTViT', img_size=64,
           arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128))


def detector(things=3, stuff=2, img_size=64, **kwargs):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='mmeomt.EoMTDetector',
        eomt=dict(type='mmeomt.EoMT', backbone=dict(VIT, img_size=img_size),
                  num_classes=things + stuff, num_queries=10, num_blocks=2),
        loss=dict(type='mmeomt.EoMTLoss', num_points=256),
        num_things_classes=things, num_stuff_classes=stuff, **kwargs)).eval()


def segmentor(num_classes=5, **kwargs):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='mmeomt.EoMTSegmentor',
        eomt=dict(type='mmeomt.EoMT', backbone=VIT, num_classes=num_classes, num_queries=10,
                  num_blocks=2),
        loss=dict(type='mmeomt.EoMTLoss', num_points=256),
        num_classes=num_classes, **kwargs)).eval()


def source(build=detector, **kwargs):
    model = randomise(build(**kwargs))
    model.eomt.attn_mask_probs.zero_()
    return model


def eomt_to_transformers(core_state):
    """An ``EoMT`` state dict in ``EomtForUniversalSegmentation``'s layout (its key names),
    with the loss's no-object weight a transformers checkpoint carries."""
    out = _REVERSE.eomt_to_transformers(core_state)
    out['criterion.empty_weight'] = torch.ones(core_state['class_head.bias'].shape[0])
    return out


class Records(logging.Handler):
    """Collects the messages of mmengine's logger (which does not propagate to caplog)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def assert_same_weights(model, reference):
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize('loader', ['mmengine', 'mmeomt'])
@pytest.mark.parametrize('layout', ['authors', 'transformers', 'bare core', 'mmeomt'])
def test_every_layout_loads_through_mmengine(layout, loader, tmp_path):
    src = source()
    core = src.eomt.state_dict()
    state = {'authors': lambda: eomt_to_authors(core),
             'transformers': lambda: eomt_to_transformers(core),
             'bare core': lambda: core,
             'mmeomt': src.state_dict}[layout]()
    path = tmp_path / 'checkpoint.pth'
    torch.save(state if layout != 'mmeomt' else {'state_dict': state, 'meta': {}}, path)
    model = detector()
    {'mmengine': load_checkpoint, 'mmeomt': load_strictly}[loader](
        model, str(path), map_location='cpu')
    assert_same_weights(model, src)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model.eomt(x), src.eomt(x)):
            assert torch.equal(ours[-1], theirs[-1])


def test_segmentor_and_nested_prefix():
    src = source(segmentor)
    authors = eomt_to_authors(src.eomt.state_dict())
    model = segmentor()
    model.load_state_dict(authors)
    assert_same_weights(model, src)
    # The adapter inside another module (as in an EMA wrapper): keys under 'module.'.
    wrapper = nn.ModuleDict(dict(module=segmentor()))
    wrapper.load_state_dict({f'module.{k}': v for k, v in authors.items()})
    assert_same_weights(wrapper['module'], src)


def test_checkpoint_of_another_crop_is_resized():
    src = source(img_size=64)
    model = detector(img_size=128)
    model.load_state_dict(eomt_to_authors(src.eomt.state_dict()))
    expected = resample_pos_embed(src.eomt.backbone.pos_embed, (4, 4), (8, 8))
    assert torch.allclose(model.eomt.backbone.pos_embed, expected)
    assert torch.equal(model.eomt.queries.weight, src.eomt.queries.weight)


def test_training_checkpoint_resumes_untouched(tmp_path):
    """Our own checkpoint with optimizer state (what resume loads) goes in as it is."""
    src = source()
    optimizer = torch.optim.AdamW(src.parameters())
    path = tmp_path / 'iter_10.pth'
    torch.save({'state_dict': src.state_dict(), 'optimizer': optimizer.state_dict(),
                'meta': {'iter': 10}}, path)
    model = detector()
    checkpoint = load_checkpoint(model, str(path), map_location='cpu')
    assert checkpoint['meta']['iter'] == 10
    assert_same_weights(model, src)


def test_unrecognised_checkpoints_fail_with_their_keys():
    with pytest.raises(ValueError, match=r'(?s)Unrecognised EoMT checkpoint.*decoder\.weight'):
        load_checkpoint_to_model(detector(), {'decoder.weight': torch.zeros(1)})
    # DINOv2 weights alone are not a whole model: they belong in the backbone's init_cfg.
    vit_only = {k: v for k, v in eomt_to_authors(source().eomt.state_dict()).items()
                if k.startswith('network.encoder.backbone.')}
    with pytest.raises(ValueError, match="backbone's init_cfg"):
        load_checkpoint_to_model(
            detector(), {k.split('backbone.', 1)[1]: v for k, v in vit_only.items()})


def test_strict_false_reports_as_torch_documents():
    """load_state_dict(strict=False): what does not fit is reported, what fits is loaded."""
    model = detector()
    result = model.load_state_dict({'decoder.weight': torch.zeros(1)}, strict=False)
    assert result.unexpected_keys == ['decoder.weight']
    assert set(result.missing_keys) == set(model.state_dict())
    with pytest.raises(RuntimeError, match='Unexpected key'):  # torch's strict=True
        detector().load_state_dict({'decoder.weight': torch.zeros(1)})

    src = source()
    authors = eomt_to_authors(src.eomt.state_dict())
    authors['network.decoder.weight'] = torch.zeros(1)  # a key the format has no rule for
    del authors['network.q.weight']
    model = detector()
    result = model.load_state_dict(authors, strict=False)
    assert result.unexpected_keys == ['network.decoder.weight']
    assert result.missing_keys == ['eomt.queries.weight']
    assert torch.equal(model.eomt.class_head.weight, src.eomt.class_head.weight)
    with pytest.raises(ValueError, match=r'(?s)network\.decoder\.weight.*eomt\.queries\.weight'):
        load_checkpoint_to_model(detector(), authors)


def test_mismatches_are_listed(tmp_path):
    authors = eomt_to_authors(source().eomt.state_dict())
    path = tmp_path / 'pytorch_model.bin'
    torch.save(authors, path)
    with pytest.raises(ValueError) as error:
        load_strictly(detector(things=4), str(path))  # 6 classes, the checkpoint 5
    message = str(error.value)
    assert 'authors format' in message
    assert 'eomt.class_head.weight: (6, 64) vs (7, 64)' in message
    assert 'eomt.class_head.bias: (6,) vs (7,)' in message
    assert "skip_mismatched=[...]" in message and "['eomt.class_head']" in message

    own = detector().state_dict()
    own['eomt.extra.weight'] = torch.zeros(1)
    del own['eomt.queries.weight'], own['eomt.mask_head.0.bias']
    with pytest.raises(ValueError) as error:
        load_checkpoint_to_model(detector(), own)
    message = str(error.value)
    assert re.search(r'missing keys \(2\):\s+eomt.queries.weight\s+eomt.mask_head.0.bias',
                     message)
    assert re.search(r'unexpected keys \(1\):\s+eomt.extra.weight', message)

    fewer_blocks = source().eomt.state_dict()
    fewer_blocks['attn_mask_probs'] = torch.zeros(3)
    with pytest.raises(ValueError, match=r'eomt.attn_mask_probs: \(3,\) vs \(2,\)'):
        load_checkpoint_to_model(detector(), fewer_blocks)


def test_skip_mismatched_class_head(tmp_path):
    src = source()  # 5 classes
    authors = eomt_to_authors(src.eomt.state_dict())
    logger = MMLogger.get_current_instance()
    model = detector(things=4, skip_mismatched=['eomt.class_head'])
    init_head = model.eomt.class_head.weight.clone()
    handler = Records()
    logger.addHandler(handler)
    try:
        model.load_state_dict(authors, strict=False)
    finally:
        logger.removeHandler(handler)
    assert torch.equal(model.eomt.class_head.weight, init_head)
    assert torch.equal(model.eomt.queries.weight, src.eomt.queries.weight)
    assert any('kept the initial values of eomt.class_head.weight' in m
               for m in handler.messages)

    # A checkpoint without any class head (eomt2mmeomt.py --no-class-head) works as well.
    headless = {k: v for k, v in authors.items() if 'class_head' not in k}
    detector(skip_mismatched=['eomt.class_head']).load_state_dict(headless, strict=False)

    # Resuming the fine-tuned model: its class head fits and is restored.
    finetuned = randomise(detector(things=4))
    resumed = detector(things=4, skip_mismatched=['eomt.class_head'])
    resumed.load_state_dict(finetuned.state_dict())
    assert_same_weights(resumed, finetuned)

    # Strict loading keeps them as well (our loading paths are strict) ...
    strict = detector(things=4, skip_mismatched=['eomt.class_head'])
    init_head = strict.eomt.class_head.weight.clone()
    load_checkpoint_to_model(strict, authors)
    assert torch.equal(strict.eomt.class_head.weight, init_head)
    # ... and only the named prefixes are let through.
    with pytest.raises(ValueError, match='eomt.queries.weight'):
        load_checkpoint_to_model(detector(skip_mismatched=['eomt.class_head']),
                                 {k: v for k, v in authors.items() if k != 'network.q.weight'})


def test_checkpoint_class_order_permutes_a_foreign_class_head():
    """The authors' ADE20K panoptic heads use another class order than the dataset: row i of
    the model's head is the checkpoint's row class_order[i]; "no object" stays last."""
    src = source()  # 5 classes, class head (6, 64)
    order = [2, 0, 4, 1, 3]
    model = detector(checkpoint_class_order=order)
    model.load_state_dict(eomt_to_authors(src.eomt.state_dict()))
    rows = order + [5]
    assert torch.equal(model.eomt.class_head.weight, src.eomt.class_head.weight[rows])
    assert torch.equal(model.eomt.class_head.bias, src.eomt.class_head.bias[rows])
    assert torch.equal(model.eomt.queries.weight, src.eomt.queries.weight)  # nothing else moves

    # Our own checkpoints are already in the model's order (e.g. resuming).
    ours = detector(checkpoint_class_order=order)
    ours.load_state_dict(model.state_dict())
    assert_same_weights(ours, model)

    # A head of another class count (COCO weights for ADE20K fine-tuning) is left to
    # skip_mismatched.
    coco = source(things=4, stuff=3)
    fine_tune = detector(checkpoint_class_order=order, skip_mismatched=['eomt.class_head'])
    before = fine_tune.eomt.class_head.weight.clone()
    fine_tune.load_state_dict(eomt_to_authors(coco.eomt.state_dict()), strict=False)  # as mmengine
    assert torch.equal(fine_tune.eomt.class_head.weight, before)


def test_checkpoint_class_order_is_checked():
    with pytest.raises(ValueError, match='one entry per class'):
        detector(checkpoint_class_order=[0, 1, 2])
    model = detector(checkpoint_class_order=[0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match='permutation'):
        model.load_state_dict(eomt_to_authors(source().eomt.state_dict()))
