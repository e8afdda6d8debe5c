"""The ONNX Runtime backend of EoMTInferencer (mmeomt.deployment.runtime.OnnxEoMT).

What it promises:
* ``EoMTInferencer(config, weights='model.onnx', backend='onnxruntime')`` runs the network in
  ONNX Runtime and everything else -- pipeline, normalisation, post-processing, visualisation --
  with the PyTorch path's code: on the same weights the panoptic segments, the instance masks,
  labels and boxes, and the semantic maps are identical, scores and score maps equal to float
  rounding, for any batch size; so are the visualisations and demo/image_demo.py's PNGs;
* a file that does not belong to the config, is not an ONNX model, or cannot take the input is
  refused with an error naming it and what it expected;
* execution providers: short names, CUDA for a GPU device, and a provider this onnxruntime
  lacks is left out with a warning that says which package brings it (the CPU remains).
"""
import importlib.util
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from deploy_helpers import TESTS, TASKS, images, task_config  # noqa: E402
from mmeomt.apis import EoMTInferencer  # noqa: E402
from mmeomt.deployment import OnnxEoMT, resolve_providers  # noqa: E402


def run(cfg_file, weights, backend='pytorch', batch_size=1, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'Failed to add')
        inferencer = EoMTInferencer(str(cfg_file), weights=str(weights), device='cpu',
                                    backend=backend, **kwargs)
    np.random.seed(0)  # mmdet jitters the colour of each instance mask with np.random
    return inferencer, inferencer(images(), batch_size=batch_size, return_vis=True)


def assert_same_predictions(ours, theirs, task):
    assert len(ours) == len(theirs)
    count = 0
    for a, b in zip(ours, theirs):
        if task == 'panoptic':
            assert torch.equal(a.pred_panoptic_seg.sem_seg, b.pred_panoptic_seg.sem_seg)
            count += len(a.pred_panoptic_seg.sem_seg.unique())
        elif task == 'instance':
            pa, pb = a.pred_instances, b.pred_instances
            for key in ('masks', 'labels', 'bboxes'):
                assert torch.equal(pa[key], pb[key]), key
            torch.testing.assert_close(pa.scores, pb.scores, rtol=0, atol=1e-5)
            count += int((pa.masks.flatten(1).any(1)).sum())
        else:
            assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
            torch.testing.assert_close(a.seg_logits.data, b.seg_logits.data, rtol=0, atol=1e-5)
            count += len(a.pred_sem_seg.data.unique())
    # Several segments per image: the comparison is not between two empty results.
    assert count >= 2 * len(ours), count


@pytest.mark.parametrize('task', TASKS)
def test_same_data_samples_and_visualisations_as_pytorch(exported, task):
    cfg_file, checkpoint, onnx_file, _ = exported(task)
    pytorch, theirs = run(cfg_file, checkpoint)
    inferencer, ours = run(cfg_file, onnx_file, backend='onnxruntime')
    assert isinstance(inferencer.inferencer.model.eomt, OnnxEoMT)
    assert_same_predictions(ours['predictions'], theirs['predictions'], task)
    assert all(np.array_equal(a, b) for a, b in zip(ours['visualization'],
                                                    theirs['visualization']))
    ours, theirs = inferencer.dataset_meta, pytorch.dataset_meta
    assert list(ours['classes']) == list(theirs['classes'])
    assert [list(c) for c in ours['palette']] == [list(c) for c in theirs['palette']]


@pytest.mark.parametrize('task', ['panoptic', 'semantic'])
def test_batches_give_the_predictions_of_single_images(exported, task):
    cfg_file, checkpoint, onnx_file, _ = exported(task)
    _, single = run(cfg_file, checkpoint)
    _, batched = run(cfg_file, onnx_file, backend='onnxruntime', batch_size=3)
    assert_same_predictions(batched['predictions'], single['predictions'], task)


def test_the_demo_writes_the_same_pngs(exported, tmp_path):
    import cv2
    cfg_file, checkpoint, onnx_file, _ = exported('panoptic')
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), images()[0])
    spec = importlib.util.spec_from_file_location('image_demo',
                                                  TESTS.parent / 'demo' / 'image_demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main([str(image), str(cfg_file), '--weights', str(checkpoint), '--device',
                      'cpu', '--out-dir', str(tmp_path / 'pt')]) == 0
    assert demo.main([str(image), str(cfg_file), '--weights', str(onnx_file), '--device', 'cpu',
                      '--backend', 'onnxruntime', '--providers', 'cpu',
                      '--out-dir', str(tmp_path / 'ort')]) == 0
    assert (tmp_path / 'pt' / 'image.png').read_bytes() == \
        (tmp_path / 'ort' / 'image.png').read_bytes()


# ------------------------------------------------------------------------------------------
# Refusals
# ------------------------------------------------------------------------------------------
def test_a_file_of_another_task_or_model_is_refused(exported, tmp_path):
    _, _, onnx_file, _ = exported('semantic')
    cfg = task_config('panoptic')
    with pytest.raises(ValueError, match=r"not exported from this config(.|\n)*task: "
                       r"'semantic' in the file, 'panoptic' in the config"):
        EoMTInferencer(cfg, weights=str(onnx_file), backend='onnxruntime', device='cpu')
    cfg = task_config('semantic')
    cfg.model.data_preprocessor.mean = [0, 0, 0]
    cfg.model.eomt.num_queries = 20
    with pytest.raises(ValueError, match=r'num_queries: 10 in the file, 20 in the config'
                       r'(.|\n)*mean: '):
        EoMTInferencer(cfg, weights=str(onnx_file), backend='onnxruntime', device='cpu')


def test_no_onnx_file_is_refused(exported, tmp_path):
    cfg_file, checkpoint, _, _ = exported('panoptic')
    with pytest.raises(ValueError, match='needs weights=<an .onnx file>'):
        EoMTInferencer(str(cfg_file), backend='onnxruntime', device='cpu')
    with pytest.raises(FileNotFoundError, match='not a local file'):
        EoMTInferencer(str(cfg_file), weights='https://example.org/m.onnx',
                       backend='onnxruntime', device='cpu')
    with pytest.raises(ValueError, match=r'bad\.onnx: ONNX Runtime cannot load it'):
        bad = tmp_path / 'bad.onnx'
        bad.write_bytes(checkpoint.read_bytes()[:1000])
        EoMTInferencer(str(cfg_file), weights=str(bad), backend='onnxruntime', device='cpu')
    with pytest.raises(ValueError, match="backend must be 'pytorch' or 'onnxruntime'"):
        EoMTInferencer(str(cfg_file), weights=str(checkpoint), backend='tensorflow')


def test_an_input_the_file_cannot_take_is_refused(exported):
    _, _, onnx_file, _ = exported('panoptic')
    core = OnnxEoMT(str(onnx_file))
    mask_logits, class_logits = core(torch.zeros(2, 3, 64, 64))
    assert mask_logits[0].shape == (2, 10, 16, 16) and class_logits[0].shape == (2, 10, 9)
    with pytest.raises(ValueError, match=r'takes \(B, 3, 64, 64\), any B; got an input of '
                       r'\(1, 3, 96, 96\)(.|\n)*--dynamic-size'):
        core(torch.zeros(1, 3, 96, 96))


def test_a_fixed_batch_file_runs_any_batch_in_pieces(tmp_path):
    """(Exported at opset 17, which works at the training crop.)"""
    import onnx
    from deploy_helpers import make_model
    from mmeomt.deployment import export_onnx
    model = make_model('instance')
    out = tmp_path / 'static.onnx'
    report = export_onnx(model, out, dynamic_batch=False, batch_size=2, opset=17)
    assert report['metadata']['batch_size'] == 2
    file = onnx.load(str(out))
    assert file.opset_import[0].version == 17
    assert [d.dim_value for d in file.graph.input[0].type.tensor_type.shape.dim] == \
        [2, 3, 64, 64]
    core = OnnxEoMT(str(out))
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = [o[-1] for o in model.eomt(x)]
    got = [o[0] for o in core(x)]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------
# Execution providers
# ------------------------------------------------------------------------------------------
def test_short_provider_names_and_the_gpu_default(monkeypatch):
    import onnxruntime
    monkeypatch.setattr(onnxruntime, 'get_available_providers',
                        lambda: ['TensorrtExecutionProvider', 'CUDAExecutionProvider',
                                 'CPUExecutionProvider'])
    assert resolve_providers() == ['CPUExecutionProvider']
    assert resolve_providers(device='cuda:1') == [
        ('CUDAExecutionProvider', {'device_id': 1}), 'CPUExecutionProvider']
    assert resolve_providers(['tensorrt', 'cuda']) == [
        'TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    # a config turns (name, options) into a list
    assert resolve_providers([['CUDAExecutionProvider', {'device_id': 0}]]) == [
        ('CUDAExecutionProvider', {'device_id': 0}), 'CPUExecutionProvider']


def test_a_missing_provider_falls_back_to_the_cpu_with_a_warning(exported):
    import onnxruntime
    if 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        pytest.skip('this onnxruntime has CUDA')
    _, _, onnx_file, _ = exported('panoptic')
    with pytest.warns(UserWarning, match=r"no \['CUDAExecutionProvider'\](.|\n)*onnxruntime-gpu"):
        core = OnnxEoMT(str(onnx_file), providers='cuda')
    assert core.session.get_providers() == ['CPUExecutionProvider']
    with pytest.warns(UserWarning, match='CUDAExecutionProvider'):
        core = OnnxEoMT(str(onnx_file), device='cuda:0')
    assert core.session.get_providers() == ['CPUExecutionProvider']
