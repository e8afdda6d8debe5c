"""Whole-model conversion: the authors' released EoMT checkpoints (and the tools around it).

What it promises:
* ``detect_eomt_checkpoint_format`` tells 'mmeomt', 'authors' and 'transformers' apart and
  otherwise fails with sample keys;
* ``convert_eomt_checkpoint`` maps the authors' layout (``network.*``, timm backbone) onto an
  ``EoMT`` core at any prefix, losslessly: same outputs; pixel mean/std and the loss's
  ``criterion.empty_weight`` are dropped; keys with no place raise;
* ``tools/model_converters`` read weights-only files (``.safetensors`` too), write mmengine
  checkpoints atomically and fail cleanly.
(transformers' layout is covered against transformers itself in test_parity_transformers.py.)
"""
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file as save_safetensors

from mmeomt.models import EoMT, EoMTViT
from mmeomt.models.checkpoint import (convert_eomt_checkpoint, detect_eomt_checkpoint_format,
                                      load_checkpoint_file, state_dict_of)
from dinov2_formats import eomt_to_authors, randomise, to_timm

TOOLS = Path(__file__).resolve().parents[3] / 'tools' / 'model_converters'
BACKBONE = dict(type='mmeomt.EoMTViT', img_size=64, patch_size=16,
                arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128))


def eomt():
    return EoMT(BACKBONE, num_classes=5, num_queries=10, num_blocks=2).eval()


def tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def source():
    model = randomise(eomt())
    model.attn_mask_probs.copy_(torch.tensor([0.25, 0.75]))
    return model


def test_authors_round_trip_gives_identical_outputs(source):
    authors = eomt_to_authors(source.state_dict())
    assert detect_eomt_checkpoint_format(authors) == 'authors'
    converted = convert_eomt_checkpoint(authors)
    assert set(converted) == set(source.state_dict())
    model = eomt()
    model.load_state_dict(converted)  # strict
    x = torch.randn(2, 3, 64, 64)
    outputs = []
    for net in (model, source):
        torch.manual_seed(0)  # probabilities in (0, 1): the same random queries unmasked
        with torch.no_grad():
            outputs.append(net(x))
    for ours, theirs in zip(*outputs):
        assert len(ours) == len(theirs) == 3
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert torch.equal(model.attn_mask_probs, source.attn_mask_probs)


def test_prefix_and_mmeomt_format(source):
    authors = eomt_to_authors(source.state_dict())
    wrapped = convert_eomt_checkpoint(authors, prefix='eomt.')  # inside EoMTDetector/Segmentor
    assert all(k.startswith('eomt.') for k in wrapped)
    assert detect_eomt_checkpoint_format(wrapped) == 'mmeomt'
    bare = convert_eomt_checkpoint(wrapped)
    assert set(bare) == set(source.state_dict())
    # torch.compile wrappers are ignored
    compiled = {k.replace('network.', 'network._orig_mod.'): v for k, v in authors.items()}
    assert set(convert_eomt_checkpoint(compiled)) == set(bare)
    with pytest.raises(ValueError, match='prefix'):
        convert_eomt_checkpoint(authors, prefix='eomt')


def test_errors_name_the_keys(source):
    with pytest.raises(ValueError, match=r'Unrecognised EoMT checkpoint.*encoder\.conv\.weight'):
        detect_eomt_checkpoint_format({'encoder.conv.weight': torch.zeros(1)})
    authors = eomt_to_authors(source.state_dict())
    authors['network.decoder.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match='network.decoder.weight'):
        convert_eomt_checkpoint(authors)


def test_backbone_init_from_an_authors_checkpoint(source, tmp_path):
    """The ViT alone, initialised from a whole EoMT checkpoint (prefix found on load)."""
    path = tmp_path / 'pytorch_model.bin'
    torch.save(eomt_to_authors(source.state_dict()), path)
    vit = EoMTViT(**{k: v for k, v in BACKBONE.items() if k != 'type'},
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    vit.init_weights()
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(vit.state_dict()[key], value), key


def test_eomt2mmeomt_tool(source, tmp_path, capsys):
    src, dst = tmp_path / 'pytorch_model.bin', tmp_path / 'out' / 'eomt.pth'
    torch.save(eomt_to_authors(source.state_dict()), src)
    assert tool('eomt2mmeomt').main([str(src), str(dst)]) == 0
    checkpoint = torch.load(dst, weights_only=True)
    assert checkpoint['meta']['source_format'] == 'authors'
    state = checkpoint['state_dict']
    assert set(state) == {'eomt.' + k for k in source.state_dict()}
    assert sorted(p.name for p in dst.parent.iterdir()) == ['eomt.pth']  # no temporary left

    assert tool('eomt2mmeomt').main([str(src), str(dst), '--prefix', '', '--no-class-head']) == 0
    state = torch.load(dst, weights_only=True)['state_dict']
    assert 'queries.weight' in state and not any(k.startswith('class_head') for k in state)

    torch.save({'foo': torch.zeros(1)}, src)
    assert tool('eomt2mmeomt').main([str(src), str(dst)]) == 1
    assert 'Unrecognised EoMT checkpoint' in capsys.readouterr().err
    assert tool('eomt2mmeomt').main([str(tmp_path / 'missing.bin'), str(dst)]) == 1


def test_dinov2_to_mmeomt_tool(tmp_path):
    vit14 = randomise(EoMTViT(arch=BACKBONE['arch'], img_size=84, patch_size=14))
    src, dst = tmp_path / 'dinov2.pth', tmp_path / 'dinov2_p16.pth'
    torch.save({'model': to_timm(vit14.state_dict())}, src)
    args = [str(src), str(dst), '--patch-size', '16', '--img-size', '64']
    assert tool('dinov2_to_mmeomt').main(args) == 0
    vit16 = EoMTViT(arch=BACKBONE['arch'], img_size=64, patch_size=16)
    vit16.load_state_dict(torch.load(dst, weights_only=True)['state_dict'])  # strict, fits
    assert tool('dinov2_to_mmeomt').main([str(src), str(dst), '--img-size', '1', '2', '3']) == 2


def test_checkpoint_files(tmp_path):
    """What the converters read: a state dict in a .safetensors file or a torch file, bare or
    under state_dict / model / module."""
    tensors = {'a': torch.randn(3, 4), 'b': torch.arange(5), 'c': torch.randn(2).bfloat16()}
    save_safetensors(tensors, str(tmp_path / 'model.safetensors'))
    path = str(tmp_path / 'model.safetensors')
    loaded = state_dict_of(load_checkpoint_file(path), path)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    torch.save(dict(model=tensors, meta=dict(note='test')), tmp_path / 'x.pth')
    assert set(state_dict_of(load_checkpoint_file(str(tmp_path / 'x.pth')))) == set(tensors)
    torch.save([1, 2], tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='bad.pth: expected a state dict'):
        state_dict_of(load_checkpoint_file(str(tmp_path / 'bad.pth')), str(tmp_path / 'bad.pth'))
