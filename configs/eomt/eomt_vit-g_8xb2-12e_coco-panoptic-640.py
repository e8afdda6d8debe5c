# EoMT-g, COCO panoptic, 640x640: 57.0 PQ in the paper.
_base_ = [
    './_base_/models/eomt_vit-g_det.py',
    './_base_/datasets/coco_panoptic_640.py',
    './_base_/schedules/coco_12e.py',
    './_base_/default_runtime_det.py'
]

# Masked-attention annealing, block by block (EOMT.md §1).
default_hooks = dict(
    mask_annealing=dict(
        start_iters=[14782, 25869, 36955, 48042, 59128],
        end_iters=[29564, 40651, 51737, 62824, 73910]))
