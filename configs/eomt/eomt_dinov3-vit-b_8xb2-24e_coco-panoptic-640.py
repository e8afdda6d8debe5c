# EoMT-B (2x) on DINOv3, COCO panoptic, 640x640: 53.1 PQ in the
# authors' DINOv3 model zoo.  The released weights are deltas to the gated DINOv3 weights
# of the backbone's init_cfg (docs/dinov3.md).
_base_ = [
    './_base_/models/eomt_dinov3-vit-b_det.py',
    './_base_/datasets/coco_panoptic_640.py',
    './_base_/schedules/coco_24e_dinov3.py',
    './_base_/default_runtime_det.py'
]

# Masked-attention annealing, block by block, as the authors' DINOv3 config: the first
# masked block anneals during the warm-up (iterations 0-3,000), the others as with DINOv2.
default_hooks = dict(
    mask_annealing=dict(
        start_iters=[0, 73910, 118256],
        end_iters=[3000, 103474, 147820]))
