# COCO instance, 640 crop: mmdet's CocoDataset (80 classes) and CocoMetric on masks (pycocotools
# mask AP).  mmeomt's subclass of the dataset refuses bad data (or, with on_bad_data='skip',
# drops and counts it) and logs what it kept: mmeomt/datasets/coco.py.
dataset_type = 'mmeomt.CocoDataset'
data_root = 'data/coco/'
backend_args = None
crop_size = (640, 640)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, backend_args=backend_args),
    dict(type='RandomFlip', prob=0.5),
    # Large-scale jitter: scale so that the image fits the crop, times a factor in [0.1, 2.0].
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    # Pad bottom/right to the crop with pixel value 0, i.e. before normalisation.
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, masks=0)),
    dict(
        type='RandomCrop',
        crop_size=crop_size,
        crop_type='absolute',
        recompute_bbox=True,
        allow_negative_crop=True),
    # Drop the masks the crop left empty; if none is left the dataset draws another image (the
    # authors re-draw the crop of the same image).  Crowd instances carry ignore flags and are
    # left out of gt_instances by PackDetInputs.
    dict(type='FilterAnnotations', by_box=False, by_mask=True, min_gt_mask_area=1,
         keep_empty=True),
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
    # No ground-truth masks: the metric reads the ground truth from the annotation file, and
    # the masks (a full-size array per object, 4.2 MB each at 2943 x 1435, through the
    # loader's pipe) are only drawn; tools/test.py --show/--show-dir and tools/demo.py turn
    # them on (mmeomt.utils.tool_config.load_gt_masks).
    dict(type='LoadAnnotations', with_bbox=True, with_mask=False, backend_args=backend_args),
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
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        # The authors skip images without annotations.
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
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='segm',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
