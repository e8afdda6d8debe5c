# EoMT-L on DINOv3, COCO instance, 640x640: 45.9 mask AP in the
# authors' DINOv3 model zoo.  The released weights are deltas to the gated DINOv3 weights
# of the backbone's init_cfg (docs/dinov3.md).
_base_ = [
    './_base_/models/eomt_dinov3-vit-l_det.py',
    './_base_/datasets/coco_instance_640.py',
    './_base_/schedules/coco-instance_12e_dinov3.py',
    './_base_/default_runtime_det.py'
]

num_classes = 80
model = dict(
    eomt=dict(num_classes=num_classes),
    loss=dict(num_classes=num_classes),
    num_things_classes=num_classes,
    num_stuff_classes=0,
    test_cfg=dict(panoptic_on=False, instance_on=True))

# Masked-attention annealing, block by block, as the authors' DINOv3 config (= DINOv2's).
default_hooks = dict(
    mask_annealing=dict(
        start_iters=[14782, 29564, 44346, 59128],
        end_iters=[29564, 44346, 59128, 73910]))
