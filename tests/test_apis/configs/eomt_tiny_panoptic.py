# A tiny EoMT panoptic model (64x64 input, 4 blocks of 64 dims) for the tests: the shape of a
# published config (mmdet scope, test pipeline, visualiser) without inheriting from one.  Classes
# and colours are the synthetic dataset's (5 things, 3 stuff); no data files are read.
default_scope = 'mmdet'
custom_imports = dict(imports=['mmeomt'], allow_failed_imports=False)
crop_size = (64, 64)

model = dict(
    type='mmeomt.EoMTDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    eomt=dict(
        type='mmeomt.EoMT',
        backbone=dict(
            type='mmeomt.EoMTViT',
            arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=128),
            img_size=64),
        num_classes=8,
        num_queries=10,
        num_blocks=2),
    loss=dict(type='mmeomt.EoMTLoss', num_points=256),
    num_things_classes=5,
    num_stuff_classes=3,
    test_cfg=dict(panoptic_on=True, instance_on=False, max_per_image=10))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(
        type='KeyMapper',
        transforms=[dict(type='Pad', size=crop_size, pad_val=dict(img=0))],
        remapping=dict(img='img', pad_shape='pad_shape')),
    dict(type='LoadPanopticAnnotations'),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'pad_shape',
                   'scale_factor'))
]
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='mmeomt.SyntheticPanopticDataset',
        data_root='data/synthetic/coco/',
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        test_mode=True,
        pipeline=test_pipeline))

visualizer = dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
