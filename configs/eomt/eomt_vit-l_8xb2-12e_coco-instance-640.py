# EoMT-L, COCO instance, 640x640: 45.2 mask AP in the paper.
_base_ = [
    './_base_/models/eomt_vit-l_det.py',
    './_base_/datasets/coco_instance_640.py',
    './_base_/schedules/coco-instance_12e.py',
    './_base_/default_runtime_det.py'
]

num_classes = 80
model = dict(
    eomt=dict(backbone=dict(img_size=640), num_classes=num_classes),
    loss=dict(num_classes=num_classes),
    num_things_classes=num_classes,
    num_stuff_classes=0,
    test_cfg=dict(panoptic_on=False, instance_on=True))

# Masked-attention annealing, block by block (docs/method.md §2): block k loses its mask over
# one window (the schedule's annealing_window, a fraction of the run), the windows starting
# 1, 2, 3 and 4 windows into the run.
default_hooks = dict(
    mask_annealing=dict(
        start_fractions=[k * _base_.annealing_window for k in (1, 2, 3, 4)],
        end_fractions=[(k + 1) * _base_.annealing_window for k in (1, 2, 3, 4)]))
