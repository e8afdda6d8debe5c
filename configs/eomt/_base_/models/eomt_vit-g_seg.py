# EoMT-g: DINOv2-g/14 (1536 dims, 40 blocks, SwiGLU MLP) with 4 registers; the last 5 blocks
# see the queries.
_base_ = './eomt_seg.py'

model = dict(
    eomt=dict(
        backbone=dict(
            arch='giant',
            init_cfg=dict(
                type='Pretrained',
                checkpoint='https://huggingface.co/timm/vit_giant_patch14_reg4_dinov2.lvd142m/'
                'resolve/main/pytorch_model.bin')),
        num_blocks=5))
