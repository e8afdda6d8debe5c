# eomt_vit-t_synthetic-panoptic.py on a DINOv3-style ViT-T (`tools/demo.py --backbone dinov3`):
# rotary positions on the patch tokens instead of a learned position embedding, query/value
# biases, LayerNorm eps 1e-5, the RoPE coordinates rescaled in training as DINOv3's.  Trained
# from scratch like the DINOv2-style one (no DINOv3-T weights exist); everything else is that
# config's.
_base_ = './eomt_vit-t_synthetic-panoptic.py'

model = dict(
    eomt=dict(
        backbone=dict(
            _delete_=True,
            type='mmeomt.DINOv3ViT',
            arch='tiny',
            # As the DINOv2-style demo: 1.0, since from scratch 1e-5 would start every residual
            # branch switched off.
            layer_scale_init_value=1.0,
            init_cfg=None)))
