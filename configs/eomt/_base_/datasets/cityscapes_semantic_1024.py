# Cityscapes semantic, 1024 crop: mmseg's CityscapesDataset (19 train ids from
# *_gtFine_labelTrainIds.png, 255 = ignore; mmeomt's subclass names unreadable files) and
# IoUMetric (mIoU).
dataset_type = 'mmeomt.CityscapesDataset'
data_root = 'data/cityscapes/'
crop_size = (1024, 1024)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # Colour jitter on the original image, before any padding, as the authors: brightness +-32,
    # contrast and saturation x[0.5, 1.5], hue +-18 deg, each with p = 0.5.
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    # Scale jitter: scale so that the image fits the crop (2048x1024 -> 1024x512), times a factor
    # in [0.5, 2.0].
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    # Pad bottom/right to the crop with pixel value 0 (before normalisation) and ignore labels.
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, seg=255)),
    # No cat_max_ratio: the authors crop uniformly.
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # Short side = crop (2048x1024 stays), windows along the long side.
    dict(type='ResizeShortestEdge', scale=crop_size[0], max_size=100000),
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
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
