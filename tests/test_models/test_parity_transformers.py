"""EoMT == transformers' ``EomtForUniversalSegmentation`` (4.57.6) on converted weights.

A small random ``EomtConfig`` model is built in a subprocess (transformers must not be imported
here), its state dict converted with ``convert_eomt_checkpoint`` and loaded strictly into our
core.  Compared: class and mask logits with masked attention off, and with masked attention on
at probability 1 in every block (deterministic), including the intermediate predictions.
transformers returns only the final prediction, so the snippet records every call of its
``predict`` (one per masked block, then the final one).
"""
import pytest
import torch

from mmeomt.models import EoMT
from mmeomt.models.checkpoint import convert_eomt_checkpoint, detect_eomt_checkpoint_format
from reference import run_reference

DIMS, DEPTH, HEADS, IMG, NUM_BLOCKS, QUERIES, CLASSES = 64, 4, 2, 64, 2, 10, 5

HF_SNIPPET = f'''
from transformers import EomtConfig, EomtForUniversalSegmentation

config = EomtConfig(hidden_size={DIMS}, num_hidden_layers={DEPTH}, num_attention_heads={HEADS},
                    image_size={IMG}, patch_size=16, num_blocks={NUM_BLOCKS},
                    num_queries={QUERIES}, num_labels={CLASSES})
model = EomtForUniversalSegmentation(config).eval()
g = torch.Generator().manual_seed(1)
with torch.no_grad():  # make biases, norms and LayerScale non-trivial
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
outputs['state_dict'] = model.state_dict()

calls = []
predict = model.predict
def recording_predict(tokens):
    mask_logits, class_logits = predict(tokens)
    calls.append((mask_logits, class_logits))
    return mask_logits, class_logits
model.predict = recording_predict

for name, prob in (('unmasked', 0.0), ('masked', 1.0)):
    model.attn_mask_probs.fill_(prob)
    calls.clear()
    with torch.no_grad():
        out = model(pixel_values=inputs['images'])
    assert torch.equal(out.masks_queries_logits, calls[-1][0])
    outputs[name] = [tuple(c) for c in calls]
'''


@pytest.fixture(scope='module')
def hf(tmp_path_factory):
    torch.manual_seed(0)
    images = torch.randn(2, 3, IMG, IMG)
    out = run_reference(HF_SNIPPET, tmp_path_factory.mktemp('hf'), inputs=dict(images=images))
    out['images'] = images
    return out


def _eomt(state_dict):
    backbone = dict(type='mmeomt.EoMTViT', img_size=IMG, patch_size=16,
                    arch=dict(embed_dims=DIMS, num_layers=DEPTH, num_heads=HEADS,
                              feedforward_channels=4 * DIMS))
    model = EoMT(backbone, num_classes=CLASSES, num_queries=QUERIES, num_blocks=NUM_BLOCKS).eval()
    model.load_state_dict(convert_eomt_checkpoint(state_dict))  # strict
    return model


def _compare(ours, theirs):
    masks, classes = ours
    assert len(masks) == len(classes) == len(theirs)
    for (mask, cls), (ref_mask, ref_cls) in zip(zip(masks, classes), theirs):
        assert mask.shape == ref_mask.shape == (2, QUERIES, IMG // 4, IMG // 4)
        assert cls.shape == ref_cls.shape == (2, QUERIES, CLASSES + 1)
        torch.testing.assert_close(cls, ref_cls, atol=1e-4, rtol=0)
        torch.testing.assert_close(mask, ref_mask, atol=1e-4, rtol=0)


def test_detects_transformers_format(hf):
    assert detect_eomt_checkpoint_format(hf['state_dict']) == 'transformers'


def test_parity_masked_attention_off(hf):
    model = _eomt(hf['state_dict'])
    model.attn_mask_probs.zero_()  # inference as published: only the final prediction
    with torch.no_grad():
        _compare(model(hf['images']), hf['unmasked'])
    assert len(hf['unmasked']) == 1


def test_parity_masked_attention_on(hf):
    model = _eomt(hf['state_dict'])
    assert torch.equal(model.attn_mask_probs, torch.ones(NUM_BLOCKS))  # loaded from HF
    with torch.no_grad():
        _compare(model(hf['images']), hf['masked'])
    assert len(hf['masked']) == NUM_BLOCKS + 1
    # The masks actually restrict attention: the final prediction differs from unmasked.
    assert not torch.allclose(hf['masked'][-1][0], hf['unmasked'][-1][0], atol=1e-3)
