# EoMT-B (2x), COCO panoptic, 640x640: 51.6 PQ in the paper.
_base_ = [
    './_base_/models/eomt_vit-b_det.py',
    './_base_/datasets/coco_panoptic_640.py',
    './_base_/schedules/coco_24e.py',
    './_base_/default_runtime_det.py'
]

# Masked-attention annealing, block by block (EOMT.md §1).
default_hooks = dict(
    mask_annealing=dict(
        start_iters=[29564, 73910, 118256],
        end_iters=[59128, 103474, 147820]))
