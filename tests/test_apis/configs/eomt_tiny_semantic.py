# A tiny EoMT semantic model (64x64 windows, 4 blocks of 64 dims) for the tests, mmseg scope;
# classes and colours of the synthetic dataset (8 classes).  No data files are read.
default_scope = 'mmseg'
custom_imports = dict(imports=['mmeomt'], allow_failed_imports=False)

model = dict(
    type='mmeomt.EoMTSegmentor',
    data_preprocessor=dict(
        type='mmeomt.EoMTSegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255),
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
    num_classes=8,
    test_cfg=dict(mode='window', crop_size=(64, 64)))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=64, max_size=100000),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='mmeomt.SyntheticSemanticDataset',
        data_root='data/synthetic/ade/',
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))

visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
