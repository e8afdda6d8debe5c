# What the runtimes of all configs share (default_runtime_det.py / default_runtime_seg.py add the
# host scope, the checkpoint interval and the visualiser).
custom_imports = dict(imports=['mmeomt'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mmengine's CheckpointHook, but a killed job never leaves a truncated checkpoint.
    checkpoint=dict(
        type='mmeomt.AtomicCheckpointHook',
        by_epoch=False,
        save_last=True,
        max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # docs/method.md §2: masked attention annealed block by block.  The windows depend on the
    # model size (num_blocks) and the schedule, so every model config sets them, as fractions of
    # train_cfg.max_iters (start_fractions / end_fractions) or in iterations (start_iters /
    # end_iters; the other pair stays None).
    mask_annealing=dict(
        type='mmeomt.MaskAnnealingHook',
        start_fractions=None,
        end_fractions=None,
        start_iters=None,
        end_iters=None,
        power=0.9))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'

# The authors seed everything with 0.
randomness = dict(seed=0)
# mmengine's Runner, reading load_from / resume with mmeomt's loading policy (per-URL cache,
# safe loading) and loading them strictly (mmeomt.engine.runner).
runner_type = 'mmeomt.EoMTRunner'
load_from = None
resume = False
