"""One-call inference (mmeomt.apis.EoMTInferencer) and demo/image_demo.py.

What it promises:
* a model-zoo name (resolved from a metafile) or a config, with weights from a URL in the
  authors' format, runs on image paths, folders and arrays for all three tasks;
* the predictions are the host libraries' data samples, the class names the config's dataset's
  (the authors' checkpoints carry none);
* one PNG per image is written, non-empty, differing from the image where the prediction has
  masks (panoptic segments, instance masks, semantic overlay) and equal to it elsewhere;
* the demo script writes the same PNGs.
"""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mmeomt.apis import EoMTInferencer
from mmeomt.datasets.synthetic import CLASSES, THING_CLASSES

from apis_helpers import CONFIGS, build, predictable
from dinov2_formats import eomt_to_authors, randomise

ROOT = Path(__file__).resolve().parents[2]
VOID = len(CLASSES)  # mmdet's void label of the 8-class panoptic model


@pytest.fixture
def image(tmp_path):
    """A 144x240 BGR image (not square: resizing and padding are exercised) saved as PNG."""
    array = np.random.default_rng(0).integers(40, 216, (144, 240, 3), dtype=np.uint8)
    path = tmp_path / 'images' / 'scene.png'
    path.parent.mkdir()
    cv2.imwrite(str(path), array)
    return path, array


def publish(server, tmp_path, task, label):
    """Serve a predictable model of ``task`` in the authors' format; write a metafile for it."""
    model = predictable(randomise(build(task)), label=label)
    url = server.put(f'tue-mps/tiny_{task}/resolve/main/pytorch_model.bin',
                     eomt_to_authors(model.eomt.state_dict()))
    metafile = tmp_path / 'metafile.yml'
    metafile.write_text(yaml.safe_dump({'Models': [{
        'Name': f'eomt_tiny_{task}', 'Alias': f'tiny_{task}',
        'Config': str(CONFIGS / f'eomt_tiny_{task}.py'), 'Weights': url}]}))
    return model, metafile


def changed(png: Path, original: np.ndarray) -> np.ndarray:
    """Pixels of the written PNG that differ from the original image, ``(H, W)`` bool."""
    assert png.is_file() and png.stat().st_size > 0
    drawn = cv2.imread(str(png))
    assert drawn.shape == original.shape
    return (drawn.astype(int) - original.astype(int)).any(-1)


def test_panoptic_by_name_from_a_url(server, tmp_path, image):
    path, array = image
    _, metafile = publish(server, tmp_path, 'panoptic', label=6)  # stuff class 'checker'
    inferencer = EoMTInferencer('tiny_panoptic', metafile=str(metafile), device='cpu')
    assert inferencer.dataset_meta['classes'] == CLASSES
    result = inferencer([str(path), array], out_dir=str(tmp_path / 'out'))

    pan = [p.pred_panoptic_seg.sem_seg[0].numpy() for p in result['predictions']]
    assert pan[0].shape == (144, 240)
    np.testing.assert_array_equal(pan[0], pan[1])  # the same image, as a path and as an array
    segment = pan[0] != VOID
    assert set(np.unique(pan[0])) == {6, VOID} and 0.05 < segment.mean() < 0.95
    assert [Path(f).name for f in result['out_files']] == ['scene.png', '000001.png']
    diff = changed(Path(result['out_files'][0]), array)
    # Colour on the segment; outside it only the outline and the label are drawn.
    assert diff[segment].mean() > 0.95 and diff[~segment].mean() < 0.3
    assert result['visualization'][0].shape == (144, 240, 3)


def test_instance_masks_and_scores(server, tmp_path, image):
    path, array = image
    _, metafile = publish(server, tmp_path, 'instance', label=1)
    inferencer = EoMTInferencer('eomt_tiny_instance', metafile=str(metafile), device='cpu')
    assert inferencer.dataset_meta['classes'] == THING_CLASSES
    result = inferencer(str(path.parent), out_dir=str(tmp_path / 'out'))  # a folder
    instances = result['predictions'][0].pred_instances
    assert len(instances) == 10 and (instances.labels == 1).all()
    assert (instances.scores > 0.5).all()
    mask = instances.masks[0].numpy()
    assert 0.05 < mask.mean() < 0.95
    diff = changed(Path(result['out_files'][0]), array)
    assert diff[mask].mean() > 0.95


def test_semantic_overlay_from_a_config_and_local_weights(tmp_path, image):
    path, array = image
    model = predictable(randomise(build('semantic')), label=3)
    weights = tmp_path / 'semantic.pth'
    torch.save({'state_dict': model.state_dict()}, weights)  # mmeomt format this time
    inferencer = EoMTInferencer(str(CONFIGS / 'eomt_tiny_semantic.py'), weights=str(weights),
                                device='cpu')
    result = inferencer([str(path)], out_dir=str(tmp_path / 'out'), opacity=0.5)
    sem = result['predictions'][0].pred_sem_seg.data[0].numpy()
    assert sem.shape == (144, 240) and (sem == 3).all()
    assert changed(Path(result['out_files'][0]), array).mean() > 0.95


def test_errors(tmp_path):
    with pytest.raises(ValueError, match='neither a config file nor a model-zoo name'):
        EoMTInferencer('no_such_model', device='cpu')


def test_image_demo_writes_pngs(server, tmp_path, image):
    path, array = image
    _, metafile = publish(server, tmp_path, 'panoptic', label=6)
    spec = importlib.util.spec_from_file_location('image_demo', ROOT / 'demo' / 'image_demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out_dir = tmp_path / 'demo_out'
    assert demo.main([str(path), 'tiny_panoptic', '--metafile', str(metafile), '--device',
                      'cpu', '--out-dir', str(out_dir)]) == 0
    assert changed(out_dir / 'scene.png', array).any()


def test_an_empty_panoptic_prediction_is_drawn_as_the_bare_image():
    """mmdet's visualiser cannot draw a panoptic map without segments; drop_empty_panoptic
    leaves such a prediction out (on a copy) and keeps any other prediction."""
    from mmdet.structures import DetDataSample
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.structures import PixelData

    from mmeomt.apis.inferencer import drop_empty_panoptic

    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    empty = DetDataSample(pred_panoptic_seg=PixelData(sem_seg=np.full((1, 24, 32), VOID)))
    visualizer = DetLocalVisualizer(name='empty_panoptic_test')
    visualizer.dataset_meta = dict(classes=CLASSES, thing_classes=THING_CLASSES,
                                   palette='random')
    with pytest.raises(ValueError, match='need at least one array to stack'):
        visualizer.add_datasample('raw', image, empty, draw_gt=False)

    drawable = drop_empty_panoptic(empty, VOID)
    assert 'pred_panoptic_seg' not in drawable and 'pred_panoptic_seg' in empty
    visualizer.add_datasample('dropped', image, drawable, draw_gt=False)
    np.testing.assert_array_equal(visualizer.get_image(), image)

    sem_seg = np.full((1, 24, 32), VOID)
    sem_seg[0, :8, :8] = 1
    segment = DetDataSample(pred_panoptic_seg=PixelData(sem_seg=sem_seg))
    assert drop_empty_panoptic(segment, VOID) is segment


def confident(model, seed=0):
    """Random weights with sharp class and mask heads: many queries confident, of several
    classes (panoptic segments, instances and semantic labels of more than one class)."""
    randomise(model, seed)
    with torch.no_grad():
        model.eomt.class_head.weight.mul_(40.0)
        model.eomt.mask_head[4].weight.mul_(40.0)
        model.eomt.attn_mask_probs.zero_()
    return model


@pytest.mark.parametrize('task', ['panoptic', 'instance', 'semantic'])
def test_batch_size_does_not_change_the_predictions(tmp_path, task):
    weights = tmp_path / f'{task}.pth'
    torch.save({'state_dict': confident(build(task)).state_dict()}, weights)
    inferencer = EoMTInferencer(str(CONFIGS / f'eomt_tiny_{task}.py'), weights=str(weights),
                                device='cpu')
    rng = np.random.default_rng(0)
    # Different sizes and aspect ratios: semantic batches are padded to the largest image.
    images = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in [(144, 240, 3), (200, 120, 3), (64, 64, 3), (90, 300, 3)]]
    alone = inferencer(images, batch_size=1)
    batched = inferencer(images, batch_size=3)
    assert alone['visualization'] is None and alone['out_files'] == []  # nothing drawn
    kinds = set()
    for one, many, image in zip(alone['predictions'], batched['predictions'], images):
        if task == 'panoptic':
            a, b = one.pred_panoptic_seg.sem_seg, many.pred_panoptic_seg.sem_seg
            kinds |= set(torch.unique(a).tolist())
        elif task == 'instance':
            a, b = one.pred_instances, many.pred_instances
            for key in ('masks', 'labels', 'bboxes'):
                assert torch.equal(a[key], b[key]), key
            # A batched GEMM rounds in another order: scores agree to float precision.
            torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6)
            kinds |= set(a.labels[a.scores > 0.3].tolist())
            a, b = a.masks, b.masks
        else:
            a, b = one.pred_sem_seg.data, many.pred_sem_seg.data
            kinds |= set(torch.unique(a).tolist())
        assert a.shape[-2:] == image.shape[:2]
        assert torch.equal(a, b)
    assert len(kinds) >= 3, kinds  # the comparison covered real predictions


def test_bad_inputs_are_named_or_skipped(tmp_path, image):
    path, array = image
    inferencer = EoMTInferencer(str(CONFIGS / 'eomt_tiny_panoptic.py'), device='cpu')
    with pytest.raises(TypeError, match=r'^input 0: expected .*dtype float32'):
        inferencer([array.astype(np.float32)])
    with pytest.raises(ValueError, match=r'input 1: .*\(5,\)'):
        inferencer([array, np.zeros(5, np.uint8)])
    # A grey 16-bit array is an image: converted as OpenCV converts such a file.
    grey = inferencer([(array[..., 0].astype(np.uint16) * 257)])['predictions'][0]
    assert grey.pred_panoptic_seg.sem_seg.shape == (1, 144, 240)

    truncated = path.parent / 'truncated.png'
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(Exception, match='truncated.png'):
        inferencer(str(path.parent))
    result = inferencer(str(path.parent), skip_bad_images=True)
    assert len(result['predictions']) == 1
    assert [Path(s['input']).name for s in result['skipped']] == ['truncated.png']
    assert 'cannot be decoded' in result['skipped'][0]['reason']
    with pytest.raises(ValueError, match='none of the 1 images could be read'):
        inferencer([str(truncated)], skip_bad_images=True)
