# EoMT-L, ADE20K semantic, 512x512: 58.4 mIoU in the paper.
_base_ = [
    './_base_/models/eomt_vit-l_seg.py',
    './_base_/datasets/ade20k_semantic_512.py',
    './_base_/schedules/ade20k_31e.py',
    './_base_/default_runtime_seg.py'
]

# The model base is ADE20K at 512 already (150 classes, 100 queries).

# Masked-attention annealing, block by block (docs/method.md §2): block k loses its mask over
# one window (the schedule's annealing_window, a fraction of the run), the windows starting
# 1, 2, 3 and 4 windows into the run.
default_hooks = dict(
    mask_annealing=dict(
        start_fractions=[k * _base_.annealing_window for k in (1, 2, 3, 4)],
        end_fractions=[(k + 1) * _base_.annealing_window for k in (1, 2, 3, 4)]))
