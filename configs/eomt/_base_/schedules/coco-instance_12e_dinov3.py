# coco-instance_12e.py with the authors' DINOv3 optimisation (their configs/dinov3/coco): lr
# 2e-4, the ViT blocks that see the queries at the base lr (no layer decay there:
# llrd_l2_enabled False), and the two-stage warm-up stretched to 2,000 + 3,000 iterations.
_base_ = './coco-instance_12e.py'

optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(layer_decay_rate=0.8, decay_query_blocks=False))
param_scheduler = [
    dict(
        type='mmeomt.TwoStageWarmupPolyLR',
        warmup_iters=2000,
        vit_warmup_iters=3000,
        power=0.9,
        begin=0,
        by_epoch=False)
]
