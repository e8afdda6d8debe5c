"""EoMTSegmentor: semantic segmentation with EoMT's windowed inference (docs/method.md §6)."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmeomt.models.segmentors.eomt_segmentor import per_pixel_scores, window_starts
from mmeomt.registry import MODELS

TINY_VIT = dict(type='mmeomt.EoMTViT', img_size=32,
                arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128))
CROP, NUM_CLASSES, QUERIES = 32, 3, 6


def build(num_classes=NUM_CLASSES, test_cfg=None, eomt_classes=None):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='mmeomt.EoMTSegmentor',
        eomt=dict(type='mmeomt.EoMT', backbone=TINY_VIT, num_queries=QUERIES, num_blocks=2,
                  num_classes=eomt_classes or num_classes),
        loss=dict(type='mmeomt.EoMTLoss', num_points=256),
        num_classes=num_classes,
        test_cfg=test_cfg or dict(mode='window', crop_size=(CROP, CROP)),
        data_preprocessor=dict(type='mmseg.SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=255, size=(CROP, CROP))))


@pytest.mark.parametrize('length,crop,expected', [
    (512, 512, [0]),
    (1024, 512, [0, 512]),  # no overlap
    (2048, 1024, [0, 1024]),  # Cityscapes
    (683, 512, [0, 171]),  # ADE20K 4:3 -> overlap 341 on one seam
    (1100, 512, [0, 294, 588]),  # overlap 436 spread as 218 per seam
    (1101, 512, [0, 294, 589]),  # 1 * (512 - 217.5) = 294.5 truncated
])
def test_window_positions(length, crop, expected):
    starts = window_starts(length, crop)
    assert starts == expected
    assert starts[-1] + crop == length  # the last window ends at the border


def test_window_positions_reject_short_sides():
    with pytest.raises(ValueError, match='shorter than the crop'):
        window_starts(500, 512)


class StubCore:
    """Replaces the core's forward: window ``k`` of a call predicts class probabilities
    ``PROBS[k]`` with mask logit 0 (sigmoid 0.5) everywhere; records its inputs."""
    PROBS = torch.tensor([[0.6, 0.2, 0.1, 0.1],
                          [0.1, 0.6, 0.2, 0.1],
                          [0.2, 0.1, 0.6, 0.1]])

    def __init__(self):
        self.calls = []

    def __call__(self, x):
        self.calls.append(x.clone())
        n = x.shape[0]
        mask_logits = torch.zeros(n, QUERIES, x.shape[-2] // 4, x.shape[-1] // 4)
        class_logits = self.PROBS[:n, None].log().expand(n, QUERIES, 4)
        return [mask_logits], [class_logits]


def column_image(h, w):
    """An input whose channel 0 holds the column index and channel 1 the row index."""
    image = torch.zeros(1, 3, h, w)
    image[0, 0] = torch.arange(w, dtype=torch.float32)
    image[0, 1] = torch.arange(h, dtype=torch.float32)[:, None]
    return image


def window_scores(k):
    # sum over Q queries of 0.5 * p[k, c]
    return QUERIES * 0.5 * StubCore.PROBS[k, :NUM_CLASSES]


def test_windows_are_averaged(monkeypatch):
    model = build()
    stub = StubCore()
    monkeypatch.setattr(model.eomt, 'forward', stub)
    # 32 x 48: two windows along W, starts [0, 16], overlap on columns 16-31.
    sample = SegDataSample(metainfo=dict(ori_shape=(32, 48), img_shape=(32, 48)))
    model.eval()
    result = model.predict(column_image(32, 48), [sample])[0]
    (windows, ) = stub.calls
    assert windows.shape == (2, 3, CROP, CROP)
    assert windows[:, 0, 0, 0].tolist() == [0, 16]  # first columns of the windows
    scores = result.seg_logits.data
    assert scores.shape == (NUM_CLASSES, 32, 48)
    expected = torch.zeros(NUM_CLASSES, 32, 48)
    expected[:, :, :16] = window_scores(0)[:, None, None]
    expected[:, :, 16:32] = ((window_scores(0) + window_scores(1)) / 2)[:, None, None]
    expected[:, :, 32:] = window_scores(1)[:, None, None]
    torch.testing.assert_close(scores, expected)
    assert (result.pred_sem_seg.data[0, :, 32:] == 1).all()
    assert (result.pred_sem_seg.data[0, :, :16] == 0).all()


def test_windows_run_along_the_long_side_and_skip_padding(monkeypatch):
    model = build()
    stub = StubCore()
    monkeypatch.setattr(model.eomt, 'forward', stub)
    # A 40 x 32 image padded by the data preprocessor to 48 x 40 (bottom 8, right 8).
    sample = SegDataSample(metainfo=dict(ori_shape=(40, 32), img_shape=(40, 32),
                                         padding_size=[0, 8, 0, 8]))
    model.eval()
    result = model.predict(column_image(48, 40), [sample])[0]
    (windows, ) = stub.calls
    assert windows.shape == (2, 3, CROP, CROP)
    assert windows[:, 1, 0, 0].tolist() == [0, 8]  # first rows: starts [0, 8] along H
    assert windows[:, 0, 0, -1].max() == 31  # no padded column is seen
    scores = result.seg_logits.data
    assert scores.shape == (NUM_CLASSES, 40, 32)
    torch.testing.assert_close(scores[:, 0], window_scores(0)[:, None].expand(-1, 32))
    torch.testing.assert_close(scores[:, 39], window_scores(1)[:, None].expand(-1, 32))


def test_input_whose_short_side_is_not_the_crop_is_resized(monkeypatch):
    model = build()
    stub = StubCore()
    monkeypatch.setattr(model.eomt, 'forward', stub)
    sample = SegDataSample(metainfo=dict(ori_shape=(50, 100), img_shape=(16, 40)))
    model.eval()
    result = model.predict(torch.zeros(1, 3, 16, 40), [sample])[0]
    # Short side 16 -> 32, long side 40 -> 80: ceil(80 / 32) = 3 windows.
    (windows, ) = stub.calls
    assert windows.shape == (3, 3, CROP, CROP)
    assert result.seg_logits.data.shape == (NUM_CLASSES, 50, 100)
    assert result.pred_sem_seg.data.shape == (1, 50, 100)


@pytest.mark.parametrize('mode', ['window', 'whole'])
def test_predict_shapes_at_ori_shape(mode):
    model = build(test_cfg=dict(mode=mode, crop_size=(CROP, CROP)))
    model.eval()
    samples = [SegDataSample(metainfo=dict(ori_shape=(90, 130), img_shape=(32, 48)))]
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)],
             data_samples=samples), False)
    with torch.no_grad():
        result = model(**data, mode='predict')[0]
        mask_logits, class_logits = model(**data, mode='tensor')
    assert result.pred_sem_seg.data.shape == (1, 90, 130)
    assert result.seg_logits.data.shape == (NUM_CLASSES, 90, 130)
    assert mask_logits[-1].shape == (1, QUERIES, 8, 12)
    assert class_logits[-1].shape == (1, QUERIES, NUM_CLASSES + 1)


def test_per_pixel_scores_drop_no_object_without_renormalising():
    mask_logits = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]])
    scores = per_pixel_scores(mask_logits, probs.log())
    s = torch.sigmoid(torch.tensor(2.0))
    expected = torch.stack([0.5 * 0.5 + s * 0.1, 0.5 * 0.3 + s * 0.1]).view(1, 2, 1, 1)
    torch.testing.assert_close(scores, expected)


def seg_sample(sem_seg):
    h, w = sem_seg.shape
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    sample.gt_sem_seg = PixelData(data=sem_seg[None].long())
    return sample


def test_loss_one_target_per_present_class_without_ignore():
    model = build()
    sem_seg = torch.full((CROP, CROP), 255)
    sem_seg[:10] = 2
    sem_seg[20:, :8] = 0
    empty = torch.full((CROP, CROP), 255)  # all unlabelled: trains all queries as no-object
    samples = [seg_sample(sem_seg), seg_sample(empty)]
    targets, _ = model._seg_data_to_instance_data(samples)
    assert sorted(targets[0].labels.tolist()) == [0, 2]
    for label, mask in zip(targets[0].labels, targets[0].masks):
        assert torch.equal(mask.bool(), sem_seg == label)
    assert len(targets[1]) == 0

    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 256, (3, CROP, CROP), dtype=torch.uint8)] * 2,
             data_samples=samples), True)
    losses = model(**data, mode='loss')
    names = {'loss_cls', 'loss_mask', 'loss_dice'}
    assert set(losses) == names | {f'd{i}.{n}' for i in range(2) for n in names}
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.eomt.queries.weight.grad.abs().sum() > 0


def test_label_values_beyond_the_classes_are_named():
    # A label PNG numbered 1..K (ADE20K's convention) read without reduce_zero_label.
    model = build()
    sem_seg = torch.full((CROP, CROP), 255)
    sem_seg[:10] = NUM_CLASSES
    sample = seg_sample(sem_seg)
    sample.set_metainfo(dict(seg_map_path='ann/0001.png'))
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 256, (3, CROP, CROP), dtype=torch.uint8)],
             data_samples=[sample]), True)
    with pytest.raises(ValueError, match=rf'ann/0001.png holds values \[{NUM_CLASSES}\]; '
                       rf'expected class indices 0..{NUM_CLASSES - 1} or ignore_index 255'):
        model(**data, mode='loss')


def test_config_errors_are_named():
    with pytest.raises(ValueError, match=r'eomt.num_classes \(4\) must equal num_classes'):
        build(eomt_classes=4)
    with pytest.raises(ValueError, match="mode must be 'window' or 'whole'"):
        build(test_cfg=dict(mode='slide'))
    with pytest.raises(ValueError, match='crop_size'):
        build(test_cfg=dict(mode='window'))


# ---------------------------------------------------------------------------------------------
# Window inference is the same as before it made and added the windows' scores one at a time.
# One window's GEMM sums in another order than the batched GEMM of all windows did, so scores
# agree to float rounding (<= 1e-6 on scores in [0, 1]) and the predicted labels are identical.

def previous_slide(model, image):
    """The windowed inference before that change: every window's queries upsampled and turned
    into scores at once, ``(n, C, crop, crop)``, then summed."""
    h, w = image.shape[-2:]
    crop = model.crop
    if min(h, w) != crop:
        scale = crop / min(h, w)
        size = (max(crop, round(h * scale)), max(crop, round(w * scale)))
        image = torch.nn.functional.interpolate(image, size=size, mode='bilinear',
                                                align_corners=False)
    H, W = image.shape[-2:]
    along_h = H > W
    starts = window_starts(H if along_h else W, crop)
    windows = [image[..., s:s + crop, :] if along_h else image[..., :, s:s + crop]
               for s in starts]
    mask_logits_list, class_logits_list = model.eomt(torch.cat(windows))
    mask_logits = torch.nn.functional.interpolate(mask_logits_list[-1], size=(crop, crop),
                                                  mode='bilinear', align_corners=False)
    window_scores = per_pixel_scores(mask_logits, class_logits_list[-1])
    sums = image.new_zeros(1, model.num_classes, H, W)
    counts = image.new_zeros(1, 1, H, W)
    for s, score in zip(starts, window_scores):
        if along_h:
            sums[..., s:s + crop, :] += score
            counts[..., s:s + crop, :] += 1
        else:
            sums[..., :, s:s + crop] += score
            counts[..., :, s:s + crop] += 1
    scores = sums / counts
    if (H, W) != (h, w):
        scores = torch.nn.functional.interpolate(scores, size=(h, w), mode='bilinear',
                                                 align_corners=False)
    return scores


@pytest.mark.parametrize('shape', [(32, 32), (32, 75), (101, 32), (45, 61)])
def test_window_scores_same_as_the_previous_implementation(shape):
    model = build(num_classes=5, eomt_classes=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        image = torch.randn(1, 3, *shape)
        with torch.no_grad():
            new, old = model.slide(image), previous_slide(model, image)
    finally:
        torch.set_num_threads(threads)
    assert new.shape == old.shape == (1, 5, *shape)
    assert (new - old).abs().max() <= 1e-6
    assert torch.equal(new.argmax(1), old.argmax(1))


def test_a_test_batch_of_different_sizes_predicts_as_one_image_at_a_time():
    """EoMTSegDataPreProcessor pads a test batch to its largest image and records the
    padding; the windows leave it out, so each image gets what it gets alone."""
    init_default_scope('mmseg')
    model = build()
    model.data_preprocessor = MODELS.build(dict(
        type='mmeomt.EoMTSegDataPreProcessor', mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
        size=(CROP, CROP)))
    model.eval()
    g = torch.Generator().manual_seed(0)
    shapes = [(32, 70), (48, 32), (32, 32)]
    images = [torch.randint(0, 256, (3, *s), generator=g, dtype=torch.uint8) for s in shapes]

    def sample(shape):
        return SegDataSample(metainfo=dict(img_shape=shape, ori_shape=(shape[0] + 7,
                                                                       shape[1] * 2)))

    with torch.no_grad():
        alone = [model.test_step(dict(inputs=[image], data_samples=[sample(s)]))[0]
                 for image, s in zip(images, shapes)]
        batch = model.test_step(dict(inputs=images, data_samples=[sample(s) for s in shapes]))
    for one, batched, shape in zip(alone, batch, shapes):
        assert batched.pred_sem_seg.data.shape == (1, shape[0] + 7, shape[1] * 2)
        assert torch.equal(one.pred_sem_seg.data, batched.pred_sem_seg.data)
        assert torch.equal(one.seg_logits.data, batched.seg_logits.data)
    assert batch[1].img_padding_size == [0, 70 - 32, 0, 0]


def test_a_test_batch_of_different_sizes_needs_data_samples():
    init_default_scope('mmseg')
    preprocessor = MODELS.build(dict(type='mmeomt.EoMTSegDataPreProcessor'))
    with pytest.raises(ValueError, match='needs data_samples'):
        preprocessor(dict(inputs=[torch.zeros(3, 8, 8), torch.zeros(3, 8, 9)]), False)
