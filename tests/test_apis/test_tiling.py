"""Tiled inference (mmeomt.apis.tiling, ``EoMTInferencer(...)(images, tiled=True)``).

What it promises:
* tiles of the model's crop, overlapping by ``tile_overlap``, the last one on the border; an
  image that fits one tile is segmented whole, exactly as without tiling;
* with a model whose predictions depend only on what each pixel shows (a stub of the core's
  logits; the pipeline, fusion head and merging are the real code), tiled inference returns
  what whole-image inference at the image's own resolution returns: objects that straddle
  tile borders come out as one segment / instance with the whole-image mask, objects seen by
  two tiles are not duplicated, two touching objects of one class are not fused, stuff of a
  class is one segment, every pixel is assigned;
* with a real (tiny, random) model on a synthetic scene, every pixel takes the class of the
  nearest tile (by centre) that predicts a segment there, void only where no tile does, and
  the tiles' batch size changes nothing;
* merging rules on hand-made tiles: IoU inside the shared region, one-to-one, area-weighted
  scores, boxes of the union;
* bad options are refused with errors naming them; the demo draws tiled predictions.
"""
import importlib.util
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.structures.mask import mask2bbox
from mmengine.structures import InstanceData
from torch import nn

from mmeomt.apis import EoMTInferencer
from mmeomt.apis.tiling import (InstancePieces, TiledPredictor, crop_size_from_config,
                                merge_instances, merge_panoptic, tile_boxes, tile_starts)
from mmeomt.datasets.synthetic import CLASSES, render_scene, scene_rng

from apis_helpers import CONFIGS, build, config
from dinov2_formats import randomise

ROOT = Path(__file__).resolve().parents[2]
VOID = len(CLASSES)
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])


# ------------------------------------------------------------------------------------------
# A scene of flat colours and a core that segments colours
# ------------------------------------------------------------------------------------------
class ColourQueries(nn.Module):
    """Stand-in for the EoMT core whose logits depend only on the pixels: query ``q`` is
    colour ``palette[q]``.  Its stride-4 mask logit is +8 on the 4x4 cells of that colour,
    -8 elsewhere; it predicts class ``labels[q]`` where the colour is in the input, "no
    object" where not.  So whole-image inference at native resolution is the truth every
    tiling must reproduce: what a tile predicts depends only on what it shows."""

    def __init__(self, palette_bgr, labels, num_classes):
        super().__init__()
        rgb = np.asarray(palette_bgr, np.float64)[:, ::-1]  # the preprocessor's bgr_to_rgb
        self.register_buffer('colours', torch.tensor((rgb - MEAN) / STD, dtype=torch.float32))
        self.labels = torch.tensor(labels)
        self.num_classes = num_classes

    def forward(self, x):
        cells = F.avg_pool2d(x, 4)  # (B, 3, H/4, W/4)
        match = (cells[:, None] - self.colours[None, :, :, None, None]).abs().amax(2) < 0.1
        mask_logits = torch.where(match, 8.0, -8.0)  # (B, Q, H/4, W/4)
        present = match.flatten(2).any(2)  # (B, Q)
        class_logits = torch.full((*present.shape, self.num_classes + 1), -8.0)
        queries = torch.arange(len(self.labels))
        class_logits[:, queries, self.labels] = torch.where(present, 8.0, -8.0)
        class_logits[:, :, -1] = torch.where(present, -8.0, 8.0)
        return [mask_logits], [class_logits]


# 112 x 112 with 64-px tiles overlapping by 16 px: tiles start at 0 and 48 on both sides
# (2 x 2), sharing rows and columns 48-63.  Boundaries on the stride-4 grid.
SIZE, CROP = 112, 64
BACKGROUND = (100, 100, 180)  # stuff 'stripes'
SCENE = [  # (label, BGR colour, (y0, y1, x0, x1))
    (0, (40, 200, 200), (20, 92, 40, 72)),     # A: straddles all four tiles
    (0, (200, 40, 200), (40, 76, 4, 40)),      # B: A's class, touches A, straddles rows 48-63
    (2, (200, 200, 40), (96, 108, 80, 104)),   # C: inside the bottom-right tile only
    (3, (40, 120, 40), (4, 16, 52, 60)),       # D: inside the shared columns: seen twice
    (6, (160, 160, 60), (100, 112, 0, 60)),    # stuff 'checker', straddles columns 48-63
]


def scene(things_only: bool):
    """The image (BGR) and a stub core for it; ``things_only`` for the instance model."""
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    for _, colour, (y0, y1, x0, x1) in SCENE:
        image[y0:y1, x0:x1] = colour
    objects = [(label, colour) for label, colour, _ in SCENE if not things_only or label < 5]
    if not things_only:
        objects.append((5, BACKGROUND))
    num_classes = 5 if things_only else 8
    core = ColourQueries([c for _, c in objects], [label for label, _ in objects], num_classes)
    return image, core


def stub_inferencer(task: str, core: nn.Module, crop=CROP) -> EoMTInferencer:
    """The tiny test model of ``task`` with ``core`` as its EoMT core; the test pipeline fits
    images into ``crop``."""
    cfg = config(task)
    pipeline = cfg.test_dataloader.dataset.pipeline
    pipeline[1].scale = (crop, crop)
    pipeline[2].transforms[0].size = (crop, crop)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'No weights given')
        inferencer = EoMTInferencer(cfg, device='cpu')
    inferencer.inferencer.model.eomt = core
    return inferencer


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two panoptic maps equal up to the numbering of the thing instances."""
    if not np.array_equal(a % INSTANCE_OFFSET, b % INSTANCE_OFFSET):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def test_tiles_cover_the_image_with_the_last_on_the_border():
    assert tile_starts(112, 64, 0.25) == [0, 48]
    assert tile_starts(230, 64, 0.25) == [0, 48, 96, 144, 166]
    assert tile_starts(128, 64, 0.0) == [0, 64]
    assert tile_starts(130, 64, 0.0) == [0, 64, 66]
    assert tile_starts(64, 64, 0.5) == tile_starts(40, 64, 0.5) == [0]
    assert tile_boxes((40, 150), (64, 64), 0.25) == [(0, 0, 40, 64), (0, 48, 40, 112),
                                                     (0, 86, 40, 150)]
    assert crop_size_from_config(config('panoptic')) == (64, 64)
    cfg = config('instance')
    cfg.test_dataloader.dataset.pipeline[2].transforms[0].size = (96, 64)  # mmcv's (w, h)
    assert crop_size_from_config(cfg) == (64, 96)
    del cfg.test_dataloader.dataset.pipeline[2]  # no Pad: the backbone's img_size
    cfg.model.eomt.backbone.img_size = (48, 80)
    assert crop_size_from_config(cfg) == (48, 80)


def test_panoptic_tiled_equals_whole_image_at_native_resolution():
    image, core = scene(things_only=False)
    whole = stub_inferencer('panoptic', core, crop=SIZE)([image])['predictions'][0]
    tiled = stub_inferencer('panoptic', core)([image], tiled=True, batch_size=3)
    tiled = tiled['predictions'][0]
    assert tiled.metainfo['tiles'] == [(0, 0, 64, 64), (0, 48, 64, 112), (48, 0, 112, 64),
                                       (48, 48, 112, 112)]
    whole_map = whole.pred_panoptic_seg.sem_seg[0].numpy()
    tiled_map = tiled.pred_panoptic_seg.sem_seg[0].numpy()
    assert tiled_map.shape == (SIZE, SIZE) and tiled_map.dtype == np.int32
    assert same_partition(tiled_map, whole_map)
    # Every pixel assigned, but for the 4 corners where three colours meet: bilinear
    # upsampling leaves no query a sigmoid >= 0.5 there, so whole-image inference voids them
    # too (filter_low_score).
    assert (tiled_map == VOID).sum() == (whole_map == VOID).sum() == 4
    ids = np.unique(tiled_map)
    # A, B, C, D once each (A spans four tiles, D is seen whole by two), two stuff classes.
    assert sorted(ids[ids >= INSTANCE_OFFSET] % INSTANCE_OFFSET) == [0, 0, 2, 3]
    assert sorted(ids[ids < INSTANCE_OFFSET]) == [5, 6, VOID]
    for label, _, (y0, y1, x0, x1) in SCENE:  # inside (bilinear upsampling rounds corners)
        segment = np.unique(tiled_map[y0 + 1:y1 - 1, x0 + 1:x1 - 1])
        assert len(segment) == 1 and segment[0] % INSTANCE_OFFSET == label


def test_instance_tiled_equals_whole_image_at_native_resolution():
    image, core = scene(things_only=True)
    whole = stub_inferencer('instance', core, crop=SIZE)([image])['predictions'][0]
    tiled = stub_inferencer('instance', core)([image], tiled=True, batch_size=2)
    tiled = tiled['predictions'][0].pred_instances
    whole = whole.pred_instances
    assert tiled.masks.shape[1:] == (SIZE, SIZE) and tiled.masks.dtype == torch.bool
    assert len(tiled) <= 10  # test_cfg.max_per_image
    assert (tiled.scores[:-1] >= tiled.scores[1:]).all()
    assert torch.equal(tiled.bboxes, mask2bbox(tiled.masks))

    confident_whole = whole[whole.scores > 0.5]
    confident = tiled[tiled.scores > 0.5]
    assert len(confident) == len(confident_whole) == 4  # no duplicates, no fused objects
    for k in range(len(confident_whole)):
        same = [j for j in range(len(confident)) if torch.equal(
            confident.masks[j], confident_whole.masks[k])]
        assert len(same) == 1, k
        j = same[0]
        assert confident.labels[j] == confident_whole.labels[k]
        torch.testing.assert_close(confident.bboxes[j], confident_whole.bboxes[k])
        # Tiles see no object edge at their borders: mean sigmoids differ slightly.
        torch.testing.assert_close(confident.scores[j], confident_whole.scores[k], atol=0.02,
                                   rtol=0)
    for label, _, (y0, y1, x0, x1) in SCENE[:4]:
        # The object's rectangle but for its corner pixels (bilinear upsampling rounds them).
        box = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        box[[y0, y0, y1 - 1, y1 - 1], [x0, x1 - 1, x0, x1 - 1]] = False
        assert any(torch.equal(m, box) for m in confident.masks[confident.labels == label])


# ------------------------------------------------------------------------------------------
# A real tiny model on a synthetic scene
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """Confident random weights of the tiny models: segments and instances of many classes."""
    paths = {}
    for task in ('panoptic', 'instance'):
        model = randomise(build(task), 0)
        with torch.no_grad():
            model.eomt.class_head.weight.mul_(40.0)
            model.eomt.mask_head[4].weight.mul_(40.0)
            model.eomt.attn_mask_probs.zero_()
        paths[task] = tmp_path_factory.mktemp('weights') / f'{task}.pth'
        torch.save({'state_dict': model.state_dict()}, paths[task])
    return paths


@pytest.fixture(scope='module')
def synthetic_image():
    image = render_scene(scene_rng(0, 'val', 0)).image[..., ::-1]  # RGB -> BGR
    assert min(image.shape[:2]) > CROP  # several tiles on both sides
    return np.ascontiguousarray(image)


def real_inferencer(task, weights):
    return EoMTInferencer(str(CONFIGS / f'eomt_tiny_{task}.py'), weights=str(weights[task]),
                          device='cpu')


def test_panoptic_pixels_take_the_nearest_tile_that_predicts_them(weights, synthetic_image):
    inferencer = real_inferencer('panoptic', weights)
    sample = inferencer([synthetic_image], tiled=True, batch_size=4)['predictions'][0]
    tiled = sample.pred_panoptic_seg.sem_seg[0].numpy()
    height, width = synthetic_image.shape[:2]
    assert tiled.shape == (height, width)
    boxes = sample.metainfo['tiles']
    assert boxes == tile_boxes((height, width), (CROP, CROP), 0.25) and len(boxes) >= 9
    # Each tile on its own, as whole-image inference of the crop.
    crops = [synthetic_image[y0:y1, x0:x1] for y0, x0, y1, x1 in boxes]
    alone = [p.pred_panoptic_seg.sem_seg[0].numpy() for p in inferencer(crops)['predictions']]
    # The expected class of each pixel: the nearest tile centre among non-void tiles.
    expected = np.full((height, width), VOID)
    nearest = np.full((height, width), np.inf)
    for (y0, x0, y1, x1), tile in zip(boxes, alone):
        ys, xs = np.mgrid[y0:y1, x0:x1]
        distance = (ys - (y0 + y1 - 1) / 2)**2 + (xs - (x0 + x1 - 1) / 2)**2
        better = (tile != VOID) & (distance < nearest[y0:y1, x0:x1])
        expected[y0:y1, x0:x1][better] = tile[better] % INSTANCE_OFFSET
        nearest[y0:y1, x0:x1][better] = distance[better]
    np.testing.assert_array_equal(tiled % INSTANCE_OFFSET, expected)
    assert len(set((expected % INSTANCE_OFFSET).ravel().tolist())) >= 3  # a real comparison
    # Thing segments merged across tiles: fewer than the tiles' segments, more than none.
    things = [len(np.unique(t[t >= INSTANCE_OFFSET])) for t in alone]
    tiled_things = len(np.unique(tiled[tiled >= INSTANCE_OFFSET]))
    assert 0 < tiled_things < sum(things)
    # Batching the tiles changes nothing.
    one_by_one = inferencer([synthetic_image], tiled=True, batch_size=1)['predictions'][0]
    assert torch.equal(one_by_one.pred_panoptic_seg.sem_seg, sample.pred_panoptic_seg.sem_seg)


def test_instance_outputs_are_whole_image_instances(weights, synthetic_image):
    inferencer = real_inferencer('instance', weights)
    result = inferencer([synthetic_image], tiled=True, batch_size=4, return_vis=True)
    instances = result['predictions'][0].pred_instances
    assert len(instances) == 10  # test_cfg.max_per_image
    assert instances.masks.shape[1:] == synthetic_image.shape[:2]
    assert instances.masks.flatten(1).any(1).all()  # tiles' empty masks are left out
    assert (instances.scores[:-1] >= instances.scores[1:]).all()
    assert torch.equal(instances.bboxes, mask2bbox(instances.masks))
    assert result['visualization'][0].shape == synthetic_image.shape


@pytest.mark.parametrize('task', ['panoptic', 'instance'])
def test_an_image_within_one_tile_is_segmented_whole(weights, task):
    inferencer = real_inferencer(task, weights)
    image = np.random.default_rng(1).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    plain = inferencer([image])['predictions'][0]
    tiled = inferencer([image], tiled=True)['predictions'][0]
    assert tiled.metainfo['tiles'] == [(0, 0, 50, 60)]
    key = 'pred_panoptic_seg' if task == 'panoptic' else 'pred_instances'
    for field in plain.get(key).keys():
        assert torch.equal(plain.get(key).get(field), tiled.get(key).get(field)), field


# ------------------------------------------------------------------------------------------
# The merging rules on hand-made tiles
# ------------------------------------------------------------------------------------------
# Two 10 x 12 tiles side by side, sharing columns 8-11.
BOXES = [(0, 0, 10, 12), (0, 8, 10, 20)]


def tile_instances(masks, labels, scores):
    masks = torch.stack(masks)
    return InstanceData(masks=masks, labels=torch.tensor(labels), scores=torch.tensor(scores),
                        bboxes=mask2bbox(masks))


def test_instances_merge_by_iou_inside_the_shared_region():
    left = torch.zeros(4, 10, 12, dtype=torch.bool)
    right = torch.zeros(3, 10, 12, dtype=torch.bool)
    left[0, 2:6, 4:12] = True       # object X, straddling: columns 4-11
    right[0, 2:6, 0:6] = True       # its right part: columns 8-13 (IoU 1 inside 8-11)
    left[1, 2:6, 4:12] = True       # a duplicate of X in the left tile
    left[2, 7:9, 9:12] = True       # object Y in the shared columns ...
    right[1, 7:9, 0:3] = True       # ... seen by the right tile as class 1, not 0
    left[3, 0:1, 10:12] = True      # Z: IoU 2/6 < 0.5 with the right tile's
    right[2, 0:2, 1:4] = True
    pieces = InstancePieces()
    pieces.add(0, BOXES[0], tile_instances(list(left), [0, 0, 0, 2], [0.9, 0.3, 0.8, 0.7]))
    pieces.add(1, BOXES[1], tile_instances(list(right), [0, 1, 2], [0.5, 0.6, 0.4]))
    merged = merge_instances(pieces, BOXES, (10, 20), iou_thr=0.5, max_per_image=10)
    # X merged once (the duplicate stays a duplicate), Y twice (two classes), Z twice.
    assert merged.labels.tolist() == [0, 0, 2, 1, 2, 0]
    x = torch.zeros(10, 20, dtype=torch.bool)
    x[2:6, 4:14] = True
    assert torch.equal(merged.masks[1], x)
    # Area-weighted: X's left piece has 32 pixels at 0.9, its right piece 24 at 0.5.
    torch.testing.assert_close(merged.scores[1], torch.tensor((32 * 0.9 + 24 * 0.5) / 56))
    assert merged.bboxes[1].tolist() == [4, 2, 14, 6]
    assert torch.equal(merged.bboxes, mask2bbox(merged.masks))
    assert len(merge_instances(pieces, BOXES, (10, 20), max_per_image=2)) == 2
    assert len(merge_instances(pieces, BOXES, (10, 20), iou_thr=0.3)) == 5  # Z merged


def test_panoptic_merge_chains_things_and_unites_stuff():
    left = torch.full((10, 12), VOID, dtype=torch.int32)
    right = torch.full((10, 12), VOID, dtype=torch.int32)
    left[:, :] = 5                                  # stuff everywhere in the left tile ...
    right[5:, :] = 5                                # ... and in the right tile's lower half
    left[1:4, 3:12] = 1 + 1 * INSTANCE_OFFSET       # a thing straddling both tiles
    right[1:4, 0:7] = 1 + 3 * INSTANCE_OFFSET
    left[6:9, 9:12] = 0 + 2 * INSTANCE_OFFSET       # another, of class 0, only at the left
    merged = merge_panoptic([left, right], BOXES, (10, 20), num_classes=VOID)
    out = merged.sem_seg[0]
    assert out.shape == (10, 20) and out.dtype == torch.int32
    thing = out[1:4, 3:15]
    assert len(torch.unique(thing)) == 1 and thing[0, 0] % INSTANCE_OFFSET == 1
    assert (out[5:, 12:] == 5).all() and (out[:, :3] == 5).all()
    # Void only where no tile predicts: the right tile's upper half beyond the left tile,
    # except the thing.  The left tile's class-0 thing is within its half: it survives.
    assert (out[[0, 4], 12:] == VOID).all() and (out[1:4, 15:] == VOID).all()
    assert (out[6:9, 9:10] % INSTANCE_OFFSET == 0).all()
    # Columns 8-11: the left tile owns 8-9, the right 10-11 where both predict.
    assert (out[6:9, 10:12] == 5).all()
    assert int((out == VOID).sum()) == 8 * 2 + 5 * 3


# ------------------------------------------------------------------------------------------
# Bad options, the demo
# ------------------------------------------------------------------------------------------
def test_bad_options_are_refused(weights, tmp_path):
    inferencer = real_inferencer('panoptic', weights)
    image = np.zeros((100, 100, 3), np.uint8)
    for overlap in (-0.1, 1.0, 1.5, 'half', True):
        with pytest.raises(ValueError, match=r'tile_overlap must be a number in \[0, 1\)'):
            inferencer([image], tiled=True, tile_overlap=overlap)
    with pytest.raises(ValueError, match=r'iou_thr must be in \(0, 1\]'):
        TiledPredictor(inferencer.inferencer, iou_thr=0)
    # 32-px tiles are resized to the 64-px crop by the test pipeline: refused.
    with pytest.raises(ValueError, match='resized a 32x32 tile to 64x64'):
        TiledPredictor(inferencer.inferencer, tile_size=32)([image])
    semantic = EoMTInferencer(str(CONFIGS / 'eomt_tiny_semantic.py'), device='cpu')
    with pytest.raises(ValueError, match='semantic models already slide crop-sized windows'):
        semantic([image], tiled=True)


def test_image_demo_tiled(weights, tmp_path, synthetic_image):
    spec = importlib.util.spec_from_file_location('image_demo', ROOT / 'demo' / 'image_demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    path = tmp_path / 'scene.png'
    cv2.imwrite(str(path), synthetic_image)
    out_dir = tmp_path / 'out'
    assert demo.main([str(path), str(CONFIGS / 'eomt_tiny_panoptic.py'), '--weights',
                      str(weights['panoptic']), '--device', 'cpu', '--out-dir', str(out_dir),
                      '--tiled', '--tile-overlap', '0.5', '--batch-size', '4']) == 0
    drawn = cv2.imread(str(out_dir / 'scene.png'))
    assert drawn.shape == synthetic_image.shape and (drawn != synthetic_image).any()
