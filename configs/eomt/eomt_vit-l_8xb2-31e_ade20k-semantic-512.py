# EoMT-L, ADE20K semantic, 512x512: 58.4 mIoU in the paper.
_base_ = [
    './_base_/models/eomt_vit-l_seg.py',
    './_base_/datasets/ade20k_semantic_512.py',
    './_base_/schedules/ade20k_31e.py',
    './_base_/default_runtime_seg.py'
]

# The model base is ADE20K at 512 already (150 classes, 100 queries).

# Masked-attention annealing, block by block (EOMT.md §1).
default_hooks = dict(
    mask_annealing=dict(
        start_iters=[6520, 13040, 19560, 26080],
        end_iters=[13040, 19560, 26080, 32600]))
