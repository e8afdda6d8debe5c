"""Checkpoints from URLs (mmeomt.models.checkpoint.loading), served by a local HTTP server.

What it promises:
* ``load_from='http://...'`` with a checkpoint in the authors' format loads through our runner
  (``EoMTRunner``, what the configs' ``runner_type`` selects), converted on load, and the model
  predicts exactly as the one it came from; so does ``init_cfg=dict(type='Pretrained',
  checkpoint=URL)`` on the whole model;
* files are cached under one path per URL: two URLs whose files share a name
  (``pytorch_model.bin``, as every released EoMT checkpoint) load their own weights, and a
  cached file is used without the network;
* DINOv2 weights in timm format as a ``.safetensors`` URL go into the backbone's ``init_cfg``
  and are converted on load (14x14 kernels resampled to 16x16, position grid resized);
* a file that holds more than tensors is refused when it comes from a URL.
"""
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from safetensors.torch import save_file as save_safetensors

from mmeomt.engine import EoMTRunner
from mmeomt.models import EoMTViT
from mmeomt.models.checkpoint import cache_root, convert_dinov2, url_cache_path
from mmeomt.models.checkpoint import load_checkpoint_file as _load_checkpoint

from apis_helpers import build, config, predictable
from dinov2_formats import eomt_to_authors, randomise, to_timm

CONFIGS = Path(__file__).resolve().parents[3] / 'configs' / 'eomt'


def predict(model, image):
    """Panoptic maps of ``model`` for one ``(H, W, 3)`` uint8 image, through test_step."""
    from mmdet.structures import DetDataSample
    h, w = image.shape[:2]
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                         scale_factor=(1.0, 1.0), pad_shape=(h, w)))
    data = dict(inputs=[torch.from_numpy(image).permute(2, 0, 1)], data_samples=[sample])
    with torch.no_grad():
        return model.test_step(data)[0].pred_panoptic_seg.sem_seg


def test_load_from_url_in_authors_format_predicts_the_same(server, tmp_path):
    source = predictable(randomise(build('panoptic')), label=6)
    url = server.put('tue-mps/tiny_panoptic/resolve/main/pytorch_model.bin',
                     eomt_to_authors(source.eomt.state_dict()))
    cfg = config('panoptic')
    runner = EoMTRunner(model=cfg.model, work_dir=str(tmp_path / 'work'), load_from=url,
                        default_scope='mmdet', env_cfg=dict(cudnn_benchmark=False),
                        log_level='WARNING')
    runner.load_or_resume()
    loaded = runner.model.eval()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ours, theirs = predict(loaded, image), predict(source, image)
    assert torch.equal(ours, theirs)
    assert (theirs != 8).any(), 'the source model should predict segments'
    assert server.requests == ['/tue-mps/tiny_panoptic/resolve/main/pytorch_model.bin']


def test_whole_model_init_cfg_pretrained_from_a_url(server):
    source = randomise(build('semantic'))
    url = server.put('tue-mps/tiny_semantic/resolve/main/pytorch_model.bin',
                     eomt_to_authors(source.eomt.state_dict()))
    model = build('semantic', init_cfg=dict(type='Pretrained', checkpoint=url))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_urls_sharing_a_file_name_are_cached_apart(server):
    first = server.put('tue-mps/a/resolve/main/pytorch_model.bin', {'w': torch.zeros(2)})
    second = server.put('tue-mps/b/resolve/main/pytorch_model.bin', {'w': torch.ones(3)})
    assert url_cache_path(first) != url_cache_path(second)
    assert url_cache_path(first).startswith(cache_root())
    assert torch.equal(_load_checkpoint(first)['w'], torch.zeros(2))
    assert torch.equal(_load_checkpoint(second)['w'], torch.ones(3))
    assert len(server.requests) == 2

    # Cached: no second request, even with the server gone.
    server.close()
    assert torch.equal(_load_checkpoint(first, map_location='cpu')['w'], torch.zeros(2))
    assert len(server.requests) == 2


def test_cache_paths_are_readable_and_safe():
    url = 'https://huggingface.co/tue-mps/coco_panoptic_eomt_large_640/resolve/main/' \
          'pytorch_model.bin'
    assert url_cache_path(url, root='/c') == \
        '/c/huggingface.co/tue-mps/coco_panoptic_eomt_large_640/resolve/main/pytorch_model.bin'
    tricky = url_cache_path('http://127.0.0.1:8000/a/../x.bin?download=1', root='/c')
    assert tricky.startswith('/c/127.0.0.1_8000/a/_/q-') and tricky.endswith('/x.bin')
    assert url_cache_path('http://h/x.bin?v=1', root='/c') != \
        url_cache_path('http://h/x.bin?v=2', root='/c')
    with pytest.raises(ValueError, match='names no file'):
        url_cache_path('https://huggingface.co/')


def test_failed_download_names_the_cache_path(server):
    url = server.url('missing/pytorch_model.bin')
    with pytest.raises(RuntimeError, match='put the file at .*missing/pytorch_model.bin'):
        _load_checkpoint(url)


def test_dinov2_safetensors_url_initialises_the_backbone(server):
    # DINOv2-style source: 14x14 patches on a 4x4 grid, in timm's layout.
    arch = dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128)
    dinov2 = randomise(EoMTViT(arch=arch, img_size=56, patch_size=14))
    timm_state = {k: v.contiguous() for k, v in to_timm(dinov2.state_dict()).items()}
    path = server.root / 'timm/vit_tiny_reg4_dinov2/resolve/main/model.safetensors'
    path.parent.mkdir(parents=True)
    save_safetensors(timm_state, str(path))
    url = server.url('timm/vit_tiny_reg4_dinov2/resolve/main/model.safetensors')

    backbone = dict(type='mmeomt.EoMTViT', arch=arch, img_size=64,
                    init_cfg=dict(type='Pretrained', checkpoint=url))
    model = build('panoptic', eomt=dict(config('panoptic').model.eomt, backbone=backbone))
    model.init_weights()
    expected = convert_dinov2(timm_state, target=model.eomt.backbone)
    assert model.eomt.backbone.patch_embed.projection.weight.shape[-2:] == (16, 16)
    for key, value in expected.items():
        assert torch.allclose(model.eomt.backbone.state_dict()[key], value), key


def test_pickles_with_code_are_refused_from_urls(server):
    url = server.put('odd/pytorch_model.bin', {'w': torch.zeros(1), 'step': np.int64(3)})
    with pytest.raises(RuntimeError, match='holds more than tensors'):
        _load_checkpoint(url)


def test_load_from_url_in_a_published_style_config(server, tmp_path):
    """A config inheriting configs/eomt/_base_/default_runtime.py selects EoMTRunner
    (runner_type), so its load_from URL goes through the per-URL cache and loads strictly."""
    from mmengine.config import Config

    from mmeomt.registry import MODELS
    from mmeomt.utils.tool_config import build_runner
    cfg = Config.fromfile(str(CONFIGS / 'synthetic' / 'eomt_vit-t_synthetic-panoptic.py'))
    assert cfg.runner_type == 'mmeomt.EoMTRunner'
    init_default_scope('mmdet')
    source = randomise(MODELS.build(cfg.model))
    url = server.put('tue-mps/synthetic/resolve/main/pytorch_model.bin',
                     eomt_to_authors(source.eomt.state_dict()))
    cfg.work_dir, cfg.launcher, cfg.load_from = str(tmp_path / 'work'), 'none', url
    cfg.log_level = 'WARNING'
    runner = build_runner(cfg)
    assert type(runner) is EoMTRunner
    runner.load_or_resume()
    for key, value in source.state_dict().items():
        assert torch.equal(runner.model.state_dict()[key], value), key
    assert osp.isfile(url_cache_path(url))
