# EoMT's optimisation (docs/method.md §3): AdamW lr 1e-4, weight decay 0.05 on every parameter,
# layer-wise lr decay 0.8 over the ViT blocks, gradient clipping at global L2 norm 0.01.
# The constructor makes AdamW torch's fused one (CPU, CUDA); `fused=False` here would not.
# The schedules below add the two-stage warm-up + poly decay and the iteration budget.
optim_wrapper = dict(
    type='OptimWrapper',  # tools/train.py --amp switches to mixed precision
    constructor='mmeomt.EoMTOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8),
    paramwise_cfg=dict(layer_decay_rate=0.8),
    clip_grad=dict(max_norm=0.01, norm_type=2))

# Non-ViT parameters warm up over 500 iterations; the ViT waits 500 and warms up over the next
# 1000; then both decay with power 0.9.  `end` is left out: the Runner sets it to max_iters.
param_scheduler = [
    dict(
        type='mmeomt.TwoStageWarmupPolyLR',
        warmup_iters=500,
        vit_warmup_iters=1000,
        power=0.9,
        begin=0,
        by_epoch=False)
]

val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# The published schedules assume a total batch of 16 (8 GPUs x 2 images).  Every published config
# inherits this; `tools/train.py --auto-scale-lr` scales the lr of every param group by
# (GPUs x batch per GPU x optim_wrapper.accumulative_counts) / 16 (docs/training.md).
auto_scale_lr = dict(enable=False, base_batch_size=16)
