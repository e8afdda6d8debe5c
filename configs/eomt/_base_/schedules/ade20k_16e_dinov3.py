# ADE20K, 16 epochs (the authors' DINOv3 semantic schedule): 1,263 iterations per epoch x 16,
# lr 2e-4 and no layer-wise decay at all (their llrd 1.0; the lr_mult 0.1 of their config has
# no effect in their optimiser code), the two-stage warm-up over 2,000 + 3,000 iterations.
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=20208, val_interval=4000)
optim_wrapper = dict(optimizer=dict(lr=2e-4), paramwise_cfg=dict(layer_decay_rate=1.0))
param_scheduler = [
    dict(
        type='mmeomt.TwoStageWarmupPolyLR',
        warmup_iters=2000,
        vit_warmup_iters=3000,
        power=0.9,
        begin=0,
        by_epoch=False)
]
