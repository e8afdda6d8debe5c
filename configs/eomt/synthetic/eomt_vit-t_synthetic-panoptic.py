# EoMT-T on the synthetic shapes (mmeomt/datasets/synthetic/), panoptic: 5 things, 3 stuff.
# The demo of `make demo` (tools/demo.py): trains from scratch in minutes on 2 CPU cores.
#
# Everything is the published COCO panoptic set-up (_base_: mmdet adapter, COCO panoptic
# pipelines with large-scale jitter, AdamW + layer-wise lr decay + clipping, two-stage warm-up +
# poly, masked-attention annealing, deep supervision, the published post-processing,
# CocoPanopticMetric); what a tiny model trained for a few minutes needs is in
# synthetic/_base_/eomt_vit-t_synthetic.py, each with its reason.
_base_ = [
    '../_base_/models/eomt_det.py',
    '../_base_/datasets/coco_panoptic_640.py',
    './_base_/eomt_vit-t_synthetic.py',
    '../_base_/default_runtime_det.py'
]

crop_size = _base_.synthetic_crop_size
data_root = 'data/synthetic/coco/'
num_things_classes = 5
num_stuff_classes = 3
num_classes = num_things_classes + num_stuff_classes

model = dict(
    eomt=dict(
        backbone=_base_.synthetic_backbone,
        num_classes=num_classes,
        # A scene has at most 8 things + a crowd + 3 stuff regions.
        num_queries=20,
        num_blocks=_base_.synthetic_num_blocks),
    loss=dict(num_classes=num_classes, num_points=_base_.synthetic_num_points),
    num_things_classes=num_things_classes,
    num_stuff_classes=num_stuff_classes)


# (Old-style mmengine configs cannot share a function through _base_, hence one per task file.)
def _at_crop(transform):
    """A transform of the real pipeline with its 640 crop replaced by ``crop_size`` (also the
    ``Pad`` inside the test pipeline's ``KeyMapper``); nothing else changes."""
    transform = dict(transform)
    for key in ('scale', 'size', 'crop_size'):
        if key in transform:
            transform[key] = crop_size
    if 'transforms' in transform:
        transform['transforms'] = [_at_crop(t) for t in transform['transforms']]
    return transform


train_pipeline = [_at_crop(t) for t in _base_.train_pipeline]
test_pipeline = [_at_crop(t) for t in _base_.test_pipeline]

train_dataloader = dict(
    **_base_.synthetic_train_loader,
    dataset=dict(
        type='mmeomt.SyntheticPanopticDataset', data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        type='mmeomt.SyntheticPanopticDataset', data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/panoptic_val2017.json',
    seg_prefix=data_root + 'annotations/panoptic_val2017/')
test_evaluator = val_evaluator

default_hooks = _base_.synthetic_hooks
log_processor = dict(window_size=25)
