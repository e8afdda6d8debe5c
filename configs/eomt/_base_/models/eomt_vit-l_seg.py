# EoMT-L: DINOv2-L/14 (1024 dims, 24 blocks) with 4 registers; the last 4 blocks see the queries.
_base_ = './eomt_seg.py'

model = dict(
    eomt=dict(
        backbone=dict(
            arch='large',
            init_cfg=dict(
                type='Pretrained',
                checkpoint='https://huggingface.co/timm/vit_large_patch14_reg4_dinov2.lvd142m/'
                'resolve/main/pytorch_model.bin')),
        num_blocks=4))
