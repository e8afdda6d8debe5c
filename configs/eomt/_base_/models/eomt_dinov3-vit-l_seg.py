# EoMT-L on DINOv3-L/16 (1024 dims, 24 blocks, 4 registers, RoPE); the last 4 blocks
# see the queries.  The DINOv3 weights are gated: accept the licence on Hugging Face, download
# model.safetensors and point init_cfg.checkpoint at it (docs/dinov3.md).
_base_ = './eomt_seg.py'

model = dict(
    eomt=dict(
        backbone=dict(
            _delete_=True,
            type='mmeomt.DINOv3ViT',
            arch='large',
            patch_size=16,
            num_register_tokens=4,
            init_cfg=dict(
                type='Pretrained',
                checkpoint='https://huggingface.co/facebook/dinov3-vitl16-pretrain-lvd1689m/'
                'resolve/main/model.safetensors')),
        num_blocks=4))
