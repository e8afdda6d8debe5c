# EoMT-T on the synthetic shapes (mmeomt/datasets/synthetic/), semantic: 8 classes (5 shapes,
# 3 textures; the unlabelled clutter is ignored as ADE20K's label 0).  `make demo TASK=semantic`.
#
# Everything is the published ADE20K semantic set-up (_base_: mmseg adapter with windowed
# inference, ADE20K pipelines with colour and scale jitter, AdamW + layer-wise lr decay +
# clipping, two-stage warm-up + poly, masked-attention annealing, deep supervision, IoUMetric);
# what a tiny model trained for a few minutes needs is in
# synthetic/_base_/eomt_vit-t_synthetic.py, each with its reason.
_base_ = [
    '../_base_/models/eomt_seg.py',
    '../_base_/datasets/ade20k_semantic_512.py',
    './_base_/eomt_vit-t_synthetic.py',
    '../_base_/default_runtime_seg.py'
]

crop_size = _base_.synthetic_crop_size
data_root = 'data/synthetic/ade/'
num_classes = 8

model = dict(
    # SegDataPreProcessor pads the batch to this size (the pipeline already padded to it).
    data_preprocessor=dict(size=crop_size),
    eomt=dict(
        backbone=_base_.synthetic_backbone,
        num_classes=num_classes,
        # Every class present is one target: at most 8 per crop.
        num_queries=16,
        num_blocks=_base_.synthetic_num_blocks),
    loss=dict(num_classes=num_classes, num_points=_base_.synthetic_num_points),
    num_classes=num_classes,
    # EoMT's windows, at the tiny crop.
    test_cfg=dict(mode='window', crop_size=crop_size))


def _at_crop(transform):
    """A transform of the real pipeline with its 512 crop replaced by ``crop_size`` (the short
    side of the test resize too); nothing else changes."""
    transform = dict(transform)
    for key in ('scale', 'size', 'crop_size'):
        if key in transform:
            value = transform[key]
            transform[key] = crop_size[0] if isinstance(value, int) else crop_size
    return transform


train_pipeline = [_at_crop(t) for t in _base_.train_pipeline]
test_pipeline = [_at_crop(t) for t in _base_.test_pipeline]

train_dataloader = dict(
    **_base_.synthetic_train_loader,
    dataset=dict(
        type='mmeomt.SyntheticSemanticDataset', data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        type='mmeomt.SyntheticSemanticDataset', data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

default_hooks = _base_.synthetic_hooks
log_processor = dict(window_size=25)
