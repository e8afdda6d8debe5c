# COCO panoptic, 640 crop: mmdet's CocoPanopticDataset (133 classes, 80 things) and
# CocoPanopticMetric (PQ; see val_evaluator).  mmeomt's subclass of the dataset and its
# LoadPanopticAnnotations refuse bad data (or, with on_bad_data='skip', drop and count it) and
# log what they kept: mmeomt/datasets/coco.py, transforms.py.
dataset_type = 'mmeomt.CocoPanopticDataset'
data_root = 'data/coco/'
backend_args = None
crop_size = (640, 640)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(
        type='mmeomt.LoadPanopticAnnotations',
        with_bbox=True,
        with_mask=True,
        with_seg=True,
        backend_args=backend_args),
    dict(type='RandomFlip', prob=0.5),
    # Large-scale jitter: scale so that the image fits the crop, times a factor in [0.1, 2.0].
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    # Pad bottom/right to the crop with pixel value 0, i.e. before normalisation (the authors
    # pad the uint8 image), and with "ignore" in the semantic map.
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, masks=0, seg=255)),
    dict(
        type='RandomCrop',
        crop_size=crop_size,
        crop_type='absolute',
        recompute_bbox=True,
        allow_negative_crop=True),
    # Drop the instance masks the crop left empty.  Crowd segments carry ignore flags and are
    # left out of gt_instances by PackDetInputs.
    dict(type='FilterAnnotations', by_box=False, by_mask=True, min_gt_mask_area=1,
         keep_empty=False),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    # Fit the crop (long side = crop) and pad bottom/right to it with pixel value 0.  Only the
    # padded image and pad_shape leave the KeyMapper: img_shape stays the resized shape, which
    # is what the post-processing crops the predictions to before resizing to ori_shape.
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(
        type='KeyMapper',
        transforms=[dict(type='Pad', size=crop_size, pad_val=dict(img=0))],
        remapping=dict(img='img', pad_shape='pad_shape')),
    # Loaded after the resize: ground truth stays at the original resolution.
    # No ground-truth masks: the metric reads the ground truth from the annotation files, and
    # the thing masks (a full-size array each, 50 MB for 12 of them at 2943 x 1435, through the
    # loader's pipe) are only drawn; tools/test.py --show/--show-dir and tools/demo.py turn
    # them on (mmeomt.utils.tool_config.load_gt_masks).
    dict(type='mmeomt.LoadPanopticAnnotations', with_mask=False, backend_args=backend_args),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'pad_shape',
                   'scale_factor'))
]

train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/panoptic_train2017.json',
        data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'),
        # The authors skip images without segments.
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# mmdet's metric with the statistics of each image counted in memory (same results, 3x less
# time per large image): mmeomt/evaluation/panoptic_metric.py.
val_evaluator = dict(
    type='mmeomt.CocoPanopticMetric',
    ann_file=data_root + 'annotations/panoptic_val2017.json',
    seg_prefix=data_root + 'annotations/panoptic_val2017/',
    backend_args=backend_args)
test_evaluator = val_evaluator
