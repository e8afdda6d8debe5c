# The synthetic panoptic demo config shrunk for the reliability tests: a 4-block, 64-dim ViT at
# 64 x 64, batch 2, 12 iterations whose masked-attention probabilities lie strictly between 0
# and 1 for most of the run (so the masks are random draws), checkpoints every 4 iterations.
# The tests point data_root at a freshly generated synthetic dataset.
_base_ = ['../../../configs/eomt/synthetic/eomt_vit-t_synthetic-panoptic.py']

tiny_crop = (64, 64)
max_iters = 12


def _at_tiny_crop(transform):
    transform = dict(transform)
    for key in ('scale', 'size', 'crop_size'):
        if key in transform:
            transform[key] = tiny_crop
    if 'transforms' in transform:
        transform['transforms'] = [_at_tiny_crop(t) for t in transform['transforms']]
    return transform


model = dict(
    eomt=dict(
        backbone=dict(
            arch=dict(_delete_=True, embed_dims=64, num_layers=4, num_heads=2,
                      feedforward_channels=128),
            img_size=tiny_crop),
        num_queries=10,
        num_blocks=2),
    loss=dict(num_points=64))

train_pipeline = [_at_tiny_crop(t) for t in _base_.train_pipeline]
test_pipeline = [_at_tiny_crop(t) for t in _base_.test_pipeline]
train_dataloader = dict(
    batch_size=2,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# In iterations, in place of the demo's fractions of the run.
param_scheduler = [
    dict(_base_.param_scheduler[0], warmup_iters=2, vit_warmup_iters=3, warmup_fraction=None,
         vit_warmup_fraction=None)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=4, max_keep_ckpts=10),
    mask_annealing=dict(
        start_iters=[1, 3], end_iters=[9, 11], start_fractions=None, end_fractions=None))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
