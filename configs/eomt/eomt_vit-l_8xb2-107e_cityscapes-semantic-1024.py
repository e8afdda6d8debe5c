# EoMT-L, Cityscapes semantic, 1024x1024: 84.2 mIoU in the paper.
_base_ = [
    './_base_/models/eomt_vit-l_seg.py',
    './_base_/datasets/cityscapes_semantic_1024.py',
    './_base_/schedules/cityscapes_107e.py',
    './_base_/default_runtime_seg.py'
]

crop_size = (1024, 1024)
num_classes = 19
model = dict(
    data_preprocessor=dict(size=crop_size),
    eomt=dict(backbone=dict(img_size=crop_size), num_classes=num_classes),
    loss=dict(num_classes=num_classes),
    num_classes=num_classes,
    test_cfg=dict(crop_size=crop_size))

# Masked-attention annealing, block by block (docs/method.md §2): block k loses its mask over
# one window (the schedule's annealing_window, a fraction of the run), the windows starting
# 1, 2, 3 and 4 windows into the run.
default_hooks = dict(
    mask_annealing=dict(
        start_fractions=[k * _base_.annealing_window for k in (1, 2, 3, 4)],
        end_fractions=[(k + 1) * _base_.annealing_window for k in (1, 2, 3, 4)]))
