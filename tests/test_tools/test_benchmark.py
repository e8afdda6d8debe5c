"""tools/analysis_tools/benchmark.py: our core against transformers' EoMT, in one run.

What it promises:
* the default (forward) mode times the network forward of both implementations;
* ``benchmark.py e2e`` times image file -> segments for each task through the real inference
  path of each side, with the same weights: per side the median ms per image of decode +
  pipeline, network forward, post-processing and total (each image's stages add up to its
  total), the peak RSS of its own process, and per image the confident ("kept") queries --
  ``--kept`` of them on every image, as the fitted class head intends -- the outputs and the
  network inputs (a semantic image's windows all pass through the timed network);
* ``--large IMAGE`` adds one image's measurement per side;
* the weight conversion to transformers' layout is exact (converting back gives the same
  state dict; transformers' model loads it and predicts what ours does).
"""
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import pytest
import torch

from mmeomt.models import EoMT
from mmeomt.models.checkpoint import convert_eomt_checkpoint
from reference import REFERENCE_DIR, run_reference

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / 'tools' / 'analysis_tools'
TOOL = TOOLS / 'benchmark.py'
TINY_CONFIGS = ROOT / 'tests' / 'test_apis' / 'configs'


def load_tool(name='benchmark'):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reports_ours_masked_and_transformers(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    results = load_tool().main(['--arch', 'small', '--img-size', '32', '--num-queries', '4',
                                '--warmup', '0', '--iters', '2', '--threads', '1', '--masked',
                                '--compare', 'transformers', '--json', str(out)])
    names = [r['name'] for r in results]
    assert names == ['mmeomt', 'mmeomt, masked attention on',
                     'transformers EomtForUniversalSegmentation']
    assert all(r['ms_per_image'] > 0 and r['fps'] > 0 for r in results)
    assert json.loads(out.read_text())['results'] == results
    assert 'ms/img' in capsys.readouterr().out


def test_rejects_an_image_size_off_the_patch_grid():
    with pytest.raises(SystemExit):
        load_tool().parse_args(['--img-size', '100'])


@pytest.mark.parametrize('command,expected', [('e2e', 'usage: benchmark.py e2e'),
                                              ('train', '--compare-old-loss')])
def test_a_first_argument_naming_a_subcommand_runs_it(capsys, command, expected):
    with pytest.raises(SystemExit) as exit_info:
        load_tool().main([command, '--help'])
    assert exit_info.value.code == 0
    assert expected in capsys.readouterr().out


def test_e2e_config_needs_exactly_one_task():
    with pytest.raises(SystemExit):
        load_tool('e2e_benchmark').parse_args(['--config', 'x.py', '--task', 'panoptic',
                                               'semantic'])


def test_sample_photos_are_real_colour_and_grey_photos(tmp_path):
    pytest.importorskip('skimage')
    e2e = load_tool('e2e_benchmark')
    paths = e2e.write_sample_images(tmp_path)
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]
    assert len(images) == 15 and e2e.list_images(tmp_path) == sorted(paths)
    assert all(300 <= min(i.shape[:2]) and max(i.shape[:2]) <= 1411 for i in images)
    assert {i.ndim for i in images} == {2, 3}  # grey and colour
    large = e2e.write_large_image(tmp_path, paths[0])
    assert cv2.imread(str(large)).shape == (1435, 2943, 3)


@pytest.mark.parametrize('task', ['panoptic', 'instance', 'semantic'])
def test_e2e_times_each_stage_of_both_sides(task, tmp_path, capsys):
    pytest.importorskip('skimage')
    e2e = load_tool('e2e_benchmark')
    # A landscape and a portrait photo: 96x64 and 64x96, i.e. two 64-px windows each.
    images = e2e.write_sample_images(tmp_path / 'images', ['chelsea.png', 'rocket.jpg'],
                                     max_side=96)
    compare = 'transformers' if REFERENCE_DIR.is_dir() else 'none'
    out = tmp_path / 'e2e.json'
    argv = ['e2e', '--task', task, '--config', str(TINY_CONFIGS / f'eomt_tiny_{task}.py'),
            '--images', str(tmp_path / 'images'), '--kept', '3', '--threads', '1',
            '--compare', compare, '--json', str(out)]
    if task == 'panoptic':
        argv += ['--large', str(images[0])]
    report = load_tool().main(argv)
    printed = capsys.readouterr().out

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    entry = report['tasks'][task]
    sides = ['mmeomt'] + (['transformers'] if compare == 'transformers' else [])
    runs = [entry['modes']['fp32']] + ([entry['large']['fp32']] if task == 'panoptic' else [])
    for results in runs:
        assert list(results) == sides
    for side, result in entry['modes']['fp32'].items():
        assert 'error' not in result, result.get('log')
        ms, per_image = result['ms'], result['per_image']
        assert [r['image'] for r in per_image] == ['chelsea.png', 'rocket.jpg']
        for record in per_image:
            assert all(record[s] > 0 for s in ('decode', 'forward', 'post'))
            assert record['decode'] + record['forward'] + record['post'] == pytest.approx(
                record['total'], rel=1e-6)
            assert record['kept'] == 3, side  # the fitted class head, on every image
            assert record['windows'] == (2 if task == 'semantic' else 1), side
        for stage in ('decode', 'forward', 'post', 'total'):
            assert ms[stage] == pytest.approx(max(r[stage] for r in per_image))  # upper median
        assert 0 < result['peak_rss_mib'] < 8192
    if task == 'panoptic':
        for result in entry['large']['fp32'].values():
            assert [r['image'] for r in result['per_image']] == ['chelsea.png']

    for row in ('decode + pipeline', 'network forward', 'post-processing', 'total',
                'peak RSS (MiB)', 'kept queries / image',
                'post-processing + pipeline as % of forward'):
        assert row in printed
    assert ('end-to-end speed-up vs transformers' in printed) == (compare == 'transformers')


def test_e2e_tiled_times_tiled_inference_beside_whole_image(tmp_path, capsys):
    """``--tiled``: a side ``mmeomt-tiled`` whose network inputs are the image's tiles, with
    the same stages and memory figures; semantic tasks get no tiled side."""
    pytest.importorskip('skimage')
    e2e = load_tool('e2e_benchmark')
    # 96x64 and 64x96: two 64-px tiles each at overlap 0.25 (starts 0 and 32).
    e2e.write_sample_images(tmp_path / 'images', ['chelsea.png', 'rocket.jpg'], max_side=96)
    report = load_tool().main([
        'e2e', '--task', 'instance', '--config', str(TINY_CONFIGS / 'eomt_tiny_instance.py'),
        '--images', str(tmp_path / 'images'), '--kept', '3', '--threads', '1', '--compare',
        'none', '--tiled', '--tile-batch-size', '2'])
    results = report['tasks']['instance']['modes']['fp32']
    assert list(results) == ['mmeomt', 'mmeomt-tiled']
    for side, result in results.items():
        assert 'error' not in result, result.get('log')
        assert 0 < result['peak_rss_mib'] < 8192
        for record in result['per_image']:
            assert record['windows'] == (2 if side == 'mmeomt-tiled' else 1)
            assert all(record[s] > 0 for s in ('decode', 'forward', 'post'))
            assert record['decode'] + record['forward'] + record['post'] == pytest.approx(
                record['total'], rel=1e-6)
            assert record['segments'] > 0
    assert 'mmeomt-tiled' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        e2e.parse_args(['--tiled', '1.0'])


def test_e2e_validation_times_runner_test_per_stage(tmp_path, capsys):
    """``--validation``: Runner.test of the config on a written COCO-panoptic set of the
    images (after the warm-up iteration, each image repeated to 3 timed iterations at least),
    with its stages adding up; mmdet's metric (``--validation-metric``) gives our PQ."""
    pytest.importorskip('skimage')
    e2e = load_tool('e2e_benchmark')
    e2e.write_sample_images(tmp_path / 'images', ['chelsea.png', 'rocket.jpg'], max_side=96)
    argv = ['--task', 'panoptic', '--config', str(TINY_CONFIGS / 'eomt_tiny_panoptic.py'),
            '--images', str(tmp_path / 'images'), '--kept', '3', '--threads', '1',
            '--compare', 'none', '--validation']
    reports = [e2e.main(argv), e2e.main(argv + ['--validation-metric', 'CocoPanopticMetric'])]
    printed = capsys.readouterr().out
    results = [report['tasks']['panoptic']['validation']['fp32_images'] for report in reports]
    for result, metric in zip(results, ('mmeomt.CocoPanopticMetric', 'CocoPanopticMetric')):
        assert 'error' not in result, result.get('log')
        assert result['metric'] == metric
        assert [r['image'] for r in result['per_image']] == [
            '001_chelsea.jpg', '002_rocket.jpg', '003_chelsea.jpg', '004_rocket.jpg']
        for record in result['per_image']:
            assert all(record[s] > 0 for s in ('forward', 'post', 'metric', 'total'))
            assert record['decode'] + record['forward'] + record['post'] + \
                record['metric'] == pytest.approx(record['total'], rel=1e-6)
        assert 0 < result['peak_rss_mib'] < 8192
    assert results[0]['metrics'] == results[1]['metrics']
    assert 'coco_panoptic/PQ' in results[0]['metrics']
    assert 'whole iteration / forward' in printed
    with pytest.raises(SystemExit):
        e2e.parse_args(['--task', 'instance', '--validation'])


def test_e2e_reports_a_failed_measurement_and_goes_on(tmp_path, capsys):
    """A side that fails (e.g. torch.compile on a machine without a compiler) is a table line
    with its error, not the end of the run."""
    e2e = load_tool('e2e_benchmark')
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), torch.randint(0, 255, (48, 64, 3), dtype=torch.uint8).numpy())
    spec = dict(task='panoptic', device='cpu', threads=1, warmup=0, threshold=0.8, overrides={},
                config=str(TINY_CONFIGS / 'eomt_tiny_panoptic.py'),
                checkpoint=str(tmp_path / 'missing.pth'))
    results = e2e.run_sides(spec, ['mmeomt'], 'fp32', [str(image)])
    assert 'missing.pth' in results['mmeomt']['error']
    e2e.print_table('panoptic, fp32:', results)
    assert 'mmeomt: failed: ' in capsys.readouterr().out


def tiny_core():
    core = EoMT(backbone=dict(type='mmeomt.EoMTViT', img_size=64, arch=dict(
        embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128)),
        num_classes=5, num_queries=10, num_blocks=2).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in core.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    core.attn_mask_probs.zero_()
    return core


def test_weights_convert_to_transformers_and_back_exactly():
    sys.path.insert(0, str(TOOLS))
    from eomt_to_transformers import eomt_to_transformers
    state = tiny_core().state_dict()
    back = convert_eomt_checkpoint(eomt_to_transformers(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_transformers_loads_the_converted_weights_and_predicts_as_ours(tmp_path):
    sys.path.insert(0, str(TOOLS))
    from eomt_to_transformers import eomt_to_transformers, transformers_config
    core = tiny_core()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        mask_logits, class_logits = core(images)
    out = run_reference('''
        from transformers import EomtConfig, EomtForUniversalSegmentation
        model = EomtForUniversalSegmentation(EomtConfig(**inputs['config'])).eval()
        result = model.load_state_dict(inputs['state_dict'], strict=False)
        outputs['missing'], outputs['unexpected'] = result.missing_keys, result.unexpected_keys
        with torch.no_grad():
            prediction = model(pixel_values=inputs['images'])
        outputs['masks'] = prediction.masks_queries_logits
        outputs['classes'] = prediction.class_queries_logits
    ''', tmp_path, inputs=dict(config=transformers_config(core), images=images,
                               state_dict=eomt_to_transformers(core.state_dict())))
    assert out['missing'] == ['criterion.empty_weight'] and out['unexpected'] == []
    torch.testing.assert_close(out['masks'], mask_logits[-1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out['classes'], class_logits[-1], rtol=1e-4, atol=1e-4)


def test_onnx_runtime_is_timed_beside_pytorch_fp32_and_bf16(capsys):
    pytest.importorskip('onnxruntime')
    results = load_tool().main(['--arch', 'small', '--img-size', '32', '--num-queries', '4',
                                '--warmup', '0', '--iters', '1', '--threads', '1', '--onnx'])
    assert [r['name'] for r in results] == [
        'mmeomt fp32', 'mmeomt bf16 autocast',
        'onnxruntime fp32, opset 18 (CPUExecutionProvider)']
    assert all(r['ms_per_image'] > 0 for r in results)
    assert 'fp32 / bf16 / ONNX Runtime' in capsys.readouterr().out


def test_e2e_onnx_mode_runs_our_side_through_onnx_runtime(tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    pytest.importorskip('skimage')
    e2e = load_tool('e2e_benchmark')
    e2e.write_sample_images(tmp_path / 'images', ['chelsea.png', 'rocket.jpg'], max_side=96)
    report = load_tool().main([
        'e2e', '--task', 'semantic', '--config', str(TINY_CONFIGS / 'eomt_tiny_semantic.py'),
        '--images', str(tmp_path / 'images'), '--kept', '3', '--threads', '1',
        '--compare', 'none', '--onnx'])
    modes = report['tasks']['semantic']['modes']
    assert list(modes) == ['fp32', 'onnxruntime']
    assert list(modes['onnxruntime']) == ['mmeomt']  # transformers has no ONNX side
    fp32, ort = modes['fp32']['mmeomt'], modes['onnxruntime']['mmeomt']
    assert 'error' not in ort, ort.get('log')
    assert ort['ms']['forward'] > 0
    # the same weights, the same outputs: classes present, windows and confident queries
    for key in ('segments', 'windows', 'kept'):
        assert [r[key] for r in ort['per_image']] == [r[key] for r in fp32['per_image']]
    assert 'semantic, mmeomt per mode' in capsys.readouterr().out
