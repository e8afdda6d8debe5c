# EoMT-T on the synthetic shapes (mmeomt/datasets/synthetic.py), instance: 5 thing classes (crowd
# groups are ignored, as COCO's).  `make demo TASK=instance`.
#
# Everything is the published COCO instance set-up (_base_: mmdet adapter, COCO instance
# pipelines, AdamW + layer-wise lr decay + clipping, two-stage warm-up + poly, masked-attention
# annealing, deep supervision, CocoMetric on masks); only what a tiny model trained for a few
# minutes needs is overridden, each with its reason.
_base_ = [
    '../_base_/models/eomt_det.py',
    '../_base_/datasets/coco_instance_640.py',
    '../_base_/schedules/eomt_adamw.py',
    '../_base_/default_runtime_det.py'
]

# Scenes are 160-256 px; at 128 the smallest shapes are still a few mask cells wide (masks are
# at 1/4) and a training iteration takes ~0.2 s on 2 cores.
crop_size = (128, 128)
data_root = 'data/synthetic/coco/'
num_classes = 5
# ~8 minutes on 2 cores (~0.2 s per iteration), so that data + training + evaluation fit in 10.
max_iters = 2200
# What tools/demo.py generates under --data-root if it is absent (one dataset for all tasks).
synthetic_data = dict(num_train=400, num_val=100, seed=0)

model = dict(
    eomt=dict(
        backbone=dict(
            # ViT-T (192 dims, 6 blocks, 3 heads): the smallest ViT; the position grid is
            # crop / 16.  No pretrained weights exist for it (and no internet here): from scratch.
            arch='tiny',
            img_size=crop_size,
            # DINOv2's 1e-5 suits loaded weights; from scratch it would start every residual
            # branch switched off.
            layer_scale_init_value=1.0,
            init_cfg=None),
        num_classes=num_classes,
        # A scene has at most 8 things (and a crowd).
        num_queries=20,
        # The last quarter to third of the blocks see the queries, as in EoMT-S/B (3 of 12).
        num_blocks=2),
    # 32 x 32 mask logits have 1024 cells (12544 points would sample each 12 times); half of
    # them, importance-sampled, as the authors sample 12544 of 160 x 160 = 25600.
    loss=dict(num_classes=num_classes, num_points=512),
    num_things_classes=num_classes,
    num_stuff_classes=0,
    # EoMT's instance output: top 100 (query, class) pairs (20 queries x 5 classes = 100).
    test_cfg=dict(panoptic_on=False, instance_on=True, max_per_image=100))


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
    # Half the published 16: twice the updates in the same time.
    batch_size=8,
    # On 2 cores: one loader process beside the two compute threads.
    num_workers=1,
    dataset=dict(
        type='mmeomt.SyntheticInstanceDataset',
        data_root=data_root,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        type='mmeomt.SyntheticInstanceDataset',
        data_root=data_root,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    # Mixed precision, as the authors (tools/train.py --amp): bfloat16 autocast, which the CPU
    # runs ~1.3x faster here; the published AdamW, weight decay, layer decay and clipping stay.
    type='mmeomt.AmpOptimWrapper',
    dtype='bfloat16',
    # 1e-4 is for fine-tuning a pretrained encoder; from scratch 4e-4.
    optimizer=dict(lr=4e-4))
# The two-stage warm-up at about the published fractions of the run (500 and 1000 of 39k-177k
# iterations): non-ViT 20 iterations, then the ViT 40.
param_scheduler = [dict(_base_.param_scheduler[0], warmup_iters=20, vit_warmup_iters=40)]
# One validation, at the end (tools/demo.py reports it).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)

default_hooks = dict(
    # A progress line (losses, lr, annealing, ETA) every ~5 s.
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
    # Masked attention annealed block by block over the first and last windows of the EoMT-S/B
    # schedule (1/6-1/3 and 2/3-5/6 of the run), so the last sixth trains without masks.
    mask_annealing=dict(
        start_iters=[max_iters // 6, max_iters * 2 // 3],
        end_iters=[max_iters // 3, max_iters * 5 // 6]))
log_processor = dict(window_size=25)
