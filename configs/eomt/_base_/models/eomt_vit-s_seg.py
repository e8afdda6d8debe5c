# EoMT-S: DINOv2-S/14 (384 dims, 12 blocks) with 4 registers; the last 3 blocks see the queries.
_base_ = './eomt_seg.py'

model = dict(
    eomt=dict(
        backbone=dict(
            arch='small',
            init_cfg=dict(
                type='Pretrained',
                checkpoint='https://huggingface.co/timm/vit_small_patch14_reg4_dinov2.lvd142m/'
                'resolve/main/pytorch_model.bin')),
        num_blocks=3))
