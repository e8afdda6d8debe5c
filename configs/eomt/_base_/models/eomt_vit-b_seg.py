# EoMT-B: DINOv2-B/14 (768 dims, 12 blocks) with 4 registers; the last 3 blocks see the queries.
_base_ = './eomt_seg.py'

model = dict(
    eomt=dict(
        backbone=dict(
            arch='base',
            init_cfg=dict(
                type='Pretrained',
                checkpoint='https://huggingface.co/timm/vit_base_patch14_reg4_dinov2.lvd142m/'
                'resolve/main/pytorch_model.bin')),
        num_blocks=3))
