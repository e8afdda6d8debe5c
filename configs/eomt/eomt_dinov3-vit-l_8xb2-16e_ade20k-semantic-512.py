# EoMT-L on DINOv3, ADE20K semantic, 512x512: 59.5 mIoU in the
# authors' DINOv3 model zoo.  The released weights are deltas to the gated DINOv3 weights
# of the backbone's init_cfg (docs/dinov3.md).
_base_ = [
    './_base_/models/eomt_dinov3-vit-l_seg.py',
    './_base_/datasets/ade20k_semantic_512.py',
    './_base_/schedules/ade20k_16e_dinov3.py',
    './_base_/default_runtime_seg.py'
]

# Masked-attention annealing, block by block, as the authors' DINOv3 config: the first
# masked block anneals during the warm-up (iterations 0-3,000), the others as with DINOv2.
default_hooks = dict(
    mask_annealing=dict(
        start_iters=[0, 6520, 9780, 13040],
        end_iters=[3000, 9780, 13040, 16300]))
