"""The EoMT core: prediction sets, masked attention, mixed precision.

What it promises:
* training: ``num_blocks + 1`` prediction sets (deep supervision), the last is the final one;
  inference with all ``attn_mask_probs`` at 0: one set (the intermediate heads are skipped);
* masked attention as the paper: query i attends patch j only where its mask logit, bilinearly
  resized to the patch grid, is > 0; queries and prefix tokens are always visible; patch and
  prefix tokens attend everything; each query's mask is kept with probability p (else its row
  is all True);
* runs forward and backward under CPU bf16 autocast;
* ``backbone=dict(with_cp=True)`` (activation checkpointing) recomputes each block in the
  backward pass and changes neither outputs nor gradients, with masked attention, dropout and
  drop path.
"""
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

import mmeomt.models.backbones.vit as vit
from mmeomt.models import EoMT
from dinov2_formats import randomise

DIMS, Q, C, IMG, NUM_BLOCKS = 64, 10, 5, 64, 2


def eomt(backbone_options=None, **kwargs):
    backbone = dict(type='mmeomt.EoMTViT', img_size=IMG, patch_size=16,
                    arch=dict(embed_dims=DIMS, num_layers=4, num_heads=2,
                              feedforward_channels=128), **(backbone_options or {}))
    torch.manual_seed(0)
    return randomise(EoMT(backbone, num_classes=C, num_queries=Q, num_blocks=NUM_BLOCKS,
                          **kwargs))


@pytest.fixture(scope='module')
def images():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


def test_prediction_sets(images):
    model = eomt().train()
    masks, classes = model(images)
    assert len(masks) == len(classes) == NUM_BLOCKS + 1
    for mask, cls in zip(masks, classes):
        assert mask.shape == (2, Q, IMG // 4, IMG // 4)
        assert cls.shape == (2, Q, C + 1)

    model.eval()
    with torch.no_grad():
        model.attn_mask_probs.zero_()  # after annealing
        masks, classes = model(images)
        assert len(masks) == len(classes) == 1
        model.attn_mask_probs.copy_(torch.tensor([0.0, 0.5]))  # only blocks with p > 0
        assert len(model(images)[0]) == 2

    model = eomt(masked_attn_enabled=False).train()
    assert len(model(images)[0]) == 1


def test_upscale_and_arguments():
    model = eomt()
    assert len(model.upscale) == 2  # patch 16 -> 1/4 of the input in two 2x steps
    with pytest.raises(ValueError, match='num_blocks'):
        EoMT(dict(type='mmeomt.EoMTViT', arch='tiny', img_size=32), num_classes=C, num_blocks=7)


def test_attn_mask_rows_and_columns():
    model = eomt()
    grid, P = (4, 4), model.backbone.num_prefix_tokens
    N = Q + P + 16
    mask_logits = torch.randn(2, Q, 16, 16)
    mask = model.attn_mask(mask_logits, grid, N, prob=torch.tensor(1.0))
    assert mask.shape == (2, N, N) and mask.dtype == torch.bool
    assert mask[:, :Q, :Q + P].all()  # queries see queries and prefix tokens
    assert mask[:, Q:].all()  # prefix and patch tokens see everything
    coarse = F.interpolate(mask_logits, grid, mode='bilinear')
    assert torch.equal(mask[:, :Q, Q + P:], coarse.flatten(2) > 0)
    assert 0 < mask[:, :Q, Q + P:].float().mean() < 1


def test_probability_zero_is_unmasked_attention(images):
    masked = eomt().train()
    masked.attn_mask_probs.zero_()
    plain = eomt(masked_attn_enabled=False).train()
    plain.load_state_dict(masked.state_dict())
    final_masked = [out[-1] for out in masked(images)]
    final_plain = [out[-1] for out in plain(images)]
    for a, b in zip(final_masked, final_plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # ... while probability 1 changes the result
    masked.attn_mask_probs.fill_(1)
    assert not torch.allclose(masked(images)[0][-1], final_plain[0], atol=1e-3)


@pytest.mark.parametrize('prob', [0.2, 0.7])
def test_fraction_of_masked_queries_matches_probability(prob):
    model = eomt()
    B, queries, P = 8, 250, model.backbone.num_prefix_tokens  # Q from the logits' shape
    N = queries + P + 16
    torch.manual_seed(1)
    # All logits negative: a kept mask hides every patch, a dropped one hides none.
    mask = model.attn_mask(-torch.ones(B, queries, 16, 16), (4, 4), N, torch.tensor(prob))
    rows = mask[:, :queries, queries + P:]
    assert ((rows.all(-1)) | (~rows).all(-1)).all()  # per query: all or nothing
    kept = (~rows).all(-1).float().mean().item()  # 2000 draws: std 0.01
    assert abs(kept - prob) < 0.05


def test_bf16_autocast_forward_backward(images):
    model = eomt().train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        masks, classes = model(images)
        loss = sum(m.float().mean() + c.float().mean() for m, c in zip(masks, classes))
    assert masks[-1].dtype == torch.bfloat16
    loss.backward()
    for name in ('queries.weight', 'class_head.weight', 'backbone.pos_embed',
                 'backbone.layers.0.attn.qkv.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_layernorm2d_is_mmpretrains_function_with_a_channels_last_result(dtype):
    """Why EoMT keeps its own LayerNorm2d: the values (and gradients) are mmpretrain's, bit for
    bit, but the result stays the permuted view, which the next layers see (as the authors')."""
    from mmpretrain.models.utils import LayerNorm2d as PretrainLayerNorm2d

    from mmeomt.models.eomt import LayerNorm2d
    ours, theirs = LayerNorm2d(48).to(dtype), PretrainLayerNorm2d(48, eps=1e-6).to(dtype)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())
    x = (3 * torch.randn(2, 48, 5, 7) + 1).to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    assert torch.equal(ya, yb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.equal(xa.grad, xb.grad) and torch.equal(ours.weight.grad, theirs.weight.grad)
    assert yb.is_contiguous() and not ya.is_contiguous()
    assert ya.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, 'bf16-autocast'])
def test_upscale_gemm_backward_equals_conv_transpose(dtype):
    """The upscale blocks' 2 x 2 transposed convolution keeps torch's forward and takes its
    gradients from two matrix products: equal to torch's own backward up to rounding (bit for
    bit under bfloat16 autocast, where both round the same products)."""
    from mmeomt.models.eomt import ScaleBlock, Upsample2x2
    torch.manual_seed(0)
    amp = dtype == 'bf16-autocast'
    dtype = torch.float32 if amp else dtype
    block = ScaleBlock(24).to(dtype)
    x = torch.randn(3, 24, 5, 7, dtype=dtype, requires_grad=True)
    params = (x, block.conv1.weight, block.conv1.bias)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        ours = Upsample2x2.apply(*params)
        torchs = block.conv1(x)
    assert torch.equal(ours, torchs)
    grad = torch.randn_like(ours)
    ours_grads = torch.autograd.grad(ours, params, grad)
    torch_grads = torch.autograd.grad(torchs, params, grad)
    for name, a, b in zip(('input', 'weight', 'bias'), ours_grads, torch_grads):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if amp:
            assert torch.equal(a, b), name
        else:
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)
    # The block uses it only where gradients are needed on the CPU; inference runs torch's.
    with mock.patch.object(Upsample2x2, 'apply', wraps=Upsample2x2.apply) as apply:
        with torch.no_grad():
            block(x)
        assert not apply.called
        block(x)
        assert apply.called


@pytest.mark.parametrize('prob', [1.0, 0.5])
def test_activation_checkpointing_keeps_outputs_and_gradients(images, prob):
    # Drop path and dropout on: their random numbers must be replayed by the recomputation;
    # p = 0.5 also draws which queries are masked (outside the checkpointed blocks).
    options = dict(drop_path_rate=0.2)
    runs = {}
    for with_cp in (False, True):
        model = eomt(dict(options, with_cp=with_cp)).train()
        for layer in model.backbone.layers:
            layer.attn.attn_drop = 0.1
        model.attn_mask_probs.fill_(prob)
        calls = []

        def counted(*args, **kwargs):
            calls.append(1)
            return block_forward(*args, **kwargs)

        block_forward = vit.block_forward
        torch.manual_seed(1)
        with mock.patch.object(vit, 'block_forward', counted):
            masks, classes = model(images)
            forward_calls = len(calls)
            loss = sum(m.square().mean() + c.square().mean() for m, c in zip(masks, classes))
            loss.backward()
        runs[with_cp] = dict(masks=masks, classes=classes, calls=(forward_calls, len(calls)),
                             grads={n: p.grad for n, p in model.named_parameters()})
    plain, checkpointed = runs[False], runs[True]
    # Every block once in the forward; with checkpointing once more in the backward.
    assert plain['calls'] == (4, 4) and checkpointed['calls'] == (4, 8)
    for key in ('masks', 'classes'):
        for a, b in zip(plain[key], checkpointed[key]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert plain['grads'].keys() == checkpointed['grads'].keys()
    for name, grad in plain['grads'].items():
        torch.testing.assert_close(grad, checkpointed['grads'][name], rtol=0, atol=0, msg=name)
    assert plain['grads']['backbone.layers.0.attn.qkv.weight'].abs().sum() > 0


def test_activation_checkpointing_is_off_without_gradients(images):
    model = eomt(dict(with_cp=True)).eval()
    calls = []
    block_forward = vit.block_forward
    with mock.patch.object(vit, 'block_forward',
                           lambda *a, **k: calls.append(1) or block_forward(*a, **k)), \
            mock.patch.object(vit.cp, 'checkpoint', side_effect=AssertionError('checkpointed')):
        with torch.no_grad():
            model(images)
    assert len(calls) == 4
