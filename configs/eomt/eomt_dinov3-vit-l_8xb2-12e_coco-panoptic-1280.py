# EoMT-L on DINOv3, COCO panoptic, 1280x1280: 58.9 PQ in the
# authors' DINOv3 model zoo.  The released weights are deltas to the gated DINOv3 weights
# of the backbone's init_cfg (docs/dinov3.md).
_base_ = [
    './_base_/models/eomt_dinov3-vit-l_det.py',
    './_base_/datasets/coco_panoptic_1280.py',
    './_base_/schedules/coco_12e_dinov3.py',
    './_base_/default_runtime_det.py'
]

# Masked-attention annealing, block by block, as the authors' DINOv3 config: the first
# masked block anneals during the warm-up (iterations 0-3,000), the others as with DINOv2.
default_hooks = dict(
    mask_annealing=dict(
        start_iters=[0, 29564, 44346, 59128],
        end_iters=[3000, 44346, 59128, 73910]))
