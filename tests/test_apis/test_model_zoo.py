"""The model zoo: metafile, mim's reading of it, and tools/download.py.

What it promises:
* ``configs/eomt/metafile.yml`` and ``metafile_dinov3.yml`` (imported by ``model-index.yml``)
  list every published model (docs/method.md §8 and the authors' DINOv2 and DINOv3 model zoos) with
  an existing config, task, dataset, score and the authors' weights URL; names are the config
  names, aliases the authors' names; the DINOv3 entries name their DINOv3 base weights;
* mim reads our index (``mim download`` finds config and weights URL);
* ``tools/download.py NAME`` puts the weights exactly where ``load_from=URL`` looks, so the URL
  then loads without the network; ``--dest`` names files per model.
"""
import importlib
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config

from mmeomt.apis import default_model_index, get_model_info, load_model_zoo
from mmeomt.models.checkpoint import load_checkpoint_file as _load_checkpoint
from mmeomt.models.checkpoint import url_cache_path

from apis_helpers import CONFIGS

ROOT = Path(__file__).resolve().parents[2]
TASK_SCOPE = {'Panoptic Segmentation': 'mmdet', 'Instance Segmentation': 'mmdet',
              'Semantic Segmentation': 'mmseg'}
PUBLISHED = {  # docs/method.md §8 and the authors' DINOv2 model zoo
    'coco_panoptic_eomt_small_640_2x': ('PQ', 46.7),
    'coco_panoptic_eomt_base_640_2x': ('PQ', 51.6),
    'coco_panoptic_eomt_large_640': ('PQ', 56.0),
    'coco_panoptic_eomt_giant_640': ('PQ', 57.0),
    'coco_panoptic_eomt_large_1280': ('PQ', 58.3),
    'coco_panoptic_eomt_giant_1280': ('PQ', 59.2),
    'ade20k_panoptic_eomt_large_640': ('PQ', 50.6),
    'ade20k_panoptic_eomt_giant_640': ('PQ', 51.3),
    'ade20k_panoptic_eomt_large_1280': ('PQ', 51.7),
    'ade20k_panoptic_eomt_giant_1280': ('PQ', 52.8),
    'ade20k_semantic_eomt_large_512': ('mIoU', 58.4),
    'cityscapes_semantic_eomt_large_1024': ('mIoU', 84.2),
    'coco_instance_eomt_large_640': ('mask AP', 45.2),
    'coco_instance_eomt_large_1280': ('mask AP', 48.8),
}
# The authors' DINOv3 model zoo (model_zoo/dinov3.md): alias -> (metric, score, DINOv3 base).
PUBLISHED_DINOV3 = {
    'coco_panoptic_eomt_small_640_dinov3': ('PQ', 47.2, 'vits16'),
    'coco_panoptic_eomt_base_640_dinov3': ('PQ', 53.1, 'vitb16'),
    'coco_panoptic_eomt_large_640_dinov3': ('PQ', 56.8, 'vitl16'),
    'coco_panoptic_eomt_large_1280_dinov3': ('PQ', 58.9, 'vitl16'),
    'ade_semantic_eomt_large_512_dinov3': ('mIoU', 59.5, 'vitl16'),
    'coco_instance_eomt_large_640_dinov3': ('mask AP', 45.9, 'vitl16'),
    'coco_instance_eomt_large_1280_dinov3': ('mask AP', 49.9, 'vitl16'),
}


def tool():
    spec = importlib.util.spec_from_file_location('download', ROOT / 'tools' / 'download.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_metafile(folder: Path, weights: str, config: str) -> Path:
    path = folder / 'metafile.yml'
    path.write_text(yaml.safe_dump({'Models': [{
        'Name': 'eomt_tiny_panoptic', 'Alias': 'tiny_panoptic', 'Config': config,
        'Results': [{'Task': 'Panoptic Segmentation', 'Dataset': 'Synthetic',
                     'Metrics': {'PQ': 1.0}}],
        'Weights': weights}]}))
    return path


def test_metafile_lists_every_published_model():
    assert Path(default_model_index()).name == 'model-index.yml'  # .mim's or the repository's
    zoo = load_model_zoo(str(ROOT / 'model-index.yml'))
    by_alias = {info['aliases'][0]: info for info in zoo.values()}
    assert set(by_alias) == set(PUBLISHED) | set(PUBLISHED_DINOV3)
    for alias, (metric, score) in PUBLISHED.items():
        info = by_alias[alias]
        assert Path(info['config']).is_file(), info['config']
        assert Path(info['config']).stem == info['name']
        assert info['weights'] == \
            f'https://huggingface.co/tue-mps/{alias}/resolve/main/pytorch_model.bin'
        assert info['metrics'] == {metric: score}
        dataset = alias.split('_')[0]
        assert info['dataset'].lower() == dataset
        cfg = Config.fromfile(info['config'])
        assert cfg.default_scope == TASK_SCOPE[info['task']], info['name']
        assert info['task'].split()[0].lower() in info['name']
    assert get_model_info('COCO_PANOPTIC_EOMT_LARGE_640')['name'] == \
        'eomt_vit-l_8xb2-12e_coco-panoptic-640'
    with pytest.raises(KeyError, match='unknown model'):
        get_model_info('no_such_model')


def test_metafile_lists_the_dinov3_models():
    zoo = load_model_zoo(str(ROOT / 'model-index.yml'))
    by_alias = {info['aliases'][0]: info for info in zoo.values()}
    for alias, (metric, score, base) in PUBLISHED_DINOV3.items():
        info = by_alias[alias]
        assert Path(info['config']).stem == info['name']
        assert info['name'].startswith('eomt_dinov3-vit-')
        assert info['weights'] == \
            f'https://huggingface.co/tue-mps/{alias}/resolve/main/pytorch_model.bin'
        assert info['metrics'] == {metric: score}
        assert info['dataset'].lower().startswith(alias.split('_')[0])  # ade -> ADE20K
        # The delta weights name their base, which is the config's backbone init_cfg.
        base_url = f'https://huggingface.co/facebook/dinov3-{base}-pretrain-lvd1689m'
        assert info['metadata']['Base Weights'] == base_url
        cfg = Config.fromfile(info['config'])
        assert cfg.default_scope == TASK_SCOPE[info['task']], info['name']
        assert cfg.model.eomt.backbone.init_cfg.checkpoint.startswith(base_url + '/resolve/')
        assert info['task'].split()[0].lower() in info['name']
    assert get_model_info('coco_panoptic_eomt_large_640_dinov3')['name'] == \
        'eomt_dinov3-vit-l_8xb2-12e_coco-panoptic-640'


@pytest.mark.filterwarnings('ignore:pkg_resources is deprecated')
def test_mim_reads_the_model_index(monkeypatch, tmp_path, server):
    """``mim download mmeomt --config NAME`` against an index pointing at the local server."""
    # the modules (mim.commands exports functions of the same names)
    mim_download = importlib.import_module('mim.commands.download')
    mim_search = importlib.import_module('mim.commands.search')
    package = tmp_path / 'package'
    (package / '.mim' / 'configs').mkdir(parents=True)
    shutil.copy(CONFIGS / 'eomt_tiny_panoptic.py', package / '.mim' / 'configs')
    url = server.put('tue-mps/tiny/resolve/main/pytorch_model.bin', {'w': torch.ones(2)})
    write_metafile(package / '.mim', url, 'configs/eomt_tiny_panoptic.py')
    (package / '.mim' / 'model-index.yml').write_text('Import:\n  - metafile.yml\n')
    for module in (mim_download, mim_search):
        monkeypatch.setattr(module, 'get_installed_path', lambda name: str(package))
    dest = tmp_path / 'mim'
    mim_download.download('mmeomt', ['eomt_tiny_panoptic'], str(dest))
    assert torch.equal(torch.load(dest / 'pytorch_model.bin')['w'], torch.ones(2))
    assert (dest / 'eomt_tiny_panoptic.py').is_file()


def test_download_tool_fills_the_url_cache(server, tmp_path, capsys):
    url = server.put('tue-mps/tiny/resolve/main/pytorch_model.bin', {'w': torch.arange(3)})
    metafile = write_metafile(tmp_path, url, str(CONFIGS / 'eomt_tiny_panoptic.py'))
    assert tool().main(['tiny_panoptic', '--metafile', str(metafile)]) == 0
    assert Path(url_cache_path(url)).is_file()
    assert url_cache_path(url) in capsys.readouterr().out

    server.close()  # offline from here on
    assert torch.equal(_load_checkpoint(url)['w'], torch.arange(3))
    assert server.requests == ['/tue-mps/tiny/resolve/main/pytorch_model.bin']


def test_download_tool_dest_names_files_per_model(server, tmp_path):
    url = server.put('tue-mps/tiny/resolve/main/pytorch_model.bin', {'w': torch.arange(3)})
    metafile = write_metafile(tmp_path, url, str(CONFIGS / 'eomt_tiny_panoptic.py'))
    dest = tmp_path / 'checkpoints'
    assert tool().main(['eomt_tiny_panoptic', '--metafile', str(metafile),
                        '--dest', str(dest)]) == 0
    assert torch.equal(torch.load(dest / 'eomt_tiny_panoptic.bin')['w'], torch.arange(3))
    assert Config.fromfile(dest / 'eomt_tiny_panoptic.py').model.type == 'mmeomt.EoMTDetector'


def test_download_tool_errors(tmp_path, capsys, server):
    metafile = write_metafile(tmp_path, server.url('nothing/here.bin'),
                              str(CONFIGS / 'eomt_tiny_panoptic.py'))
    assert tool().main(['unknown', '--metafile', str(metafile)]) == 1
    assert 'unknown model' in capsys.readouterr().err
    assert tool().main(['tiny_panoptic', '--metafile', str(metafile)]) == 1
    assert 'Could not download' in capsys.readouterr().err
    assert tool().main(['--list', '--metafile', str(metafile)]) == 0
    assert 'eomt_tiny_panoptic' in capsys.readouterr().out
