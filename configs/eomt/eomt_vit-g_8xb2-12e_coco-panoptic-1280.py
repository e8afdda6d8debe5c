# EoMT-g, COCO panoptic, 1280x1280: 59.2 PQ in the paper.
_base_ = [
    './_base_/models/eomt_vit-g_det.py',
    './_base_/datasets/coco_panoptic_1280.py',
    './_base_/schedules/coco_12e.py',
    './_base_/default_runtime_det.py'
]

model = dict(eomt=dict(backbone=dict(img_size=1280)))

# Masked-attention annealing, block by block (docs/method.md §2): block k loses its mask over
# one window (the schedule's annealing_window, a fraction of the run), the windows starting
# 1, 1.75, 2.5, 3.25 and 4 windows into the run.
default_hooks = dict(
    mask_annealing=dict(
        start_fractions=[k * _base_.annealing_window for k in (1, 1.75, 2.5, 3.25, 4)],
        end_fractions=[(k + 1) * _base_.annealing_window for k in (1, 1.75, 2.5, 3.25, 4)]))
