# ADE20K semantic, 512 crop: mmseg's ADE20KDataset (150 classes; reduce_zero_label: label 0
# "other" becomes 255 = ignore, 1..150 become 0..149; mmeomt's subclass names unreadable files)
# and IoUMetric (mIoU).
dataset_type = 'mmeomt.ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # Colour jitter on the original image, before any padding, as the authors: brightness +-32,
    # contrast and saturation x[0.5, 1.5], hue +-18 deg, each with p = 0.5.
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    # Scale jitter: scale so that the image fits the crop, times a factor in [0.5, 2.0].
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    # Pad bottom/right to the crop with pixel value 0 (before normalisation) and ignore labels.
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    # No cat_max_ratio: the authors crop uniformly.
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # Short side = crop, no cap on the long side (the windows run along it).
    dict(type='ResizeShortestEdge', scale=crop_size[0], max_size=100000),
    # Loaded after the resize: ground truth stays at the original resolution.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]

train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        reduce_zero_label=True,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        reduce_zero_label=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
