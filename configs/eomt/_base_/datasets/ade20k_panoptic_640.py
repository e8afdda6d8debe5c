# ADE20K panoptic, 640 crop: mmdet's ADE20KPanopticDataset (150 classes: 100 things, then 50
# stuff) on the COCO-panoptic-format annotations written by mmdet's
# tools/dataset_converters/ade20k2coco.py, and CocoPanopticMetric (PQ; see val_evaluator).
# mmeomt's subclass of the dataset refuses bad data (or, with on_bad_data='skip', drops and
# counts it) and logs what it kept: mmeomt/datasets/coco.py.
dataset_type = 'mmeomt.ADE20KPanopticDataset'
data_root = 'data/ADEChallengeData2016/'
backend_args = None
crop_size = (640, 640)

train_pipeline = [
    # float32 for mmdet's PhotoMetricDistortion.
    dict(type='LoadImageFromFile', to_float32=True, backend_args=backend_args),
    dict(
        type='mmeomt.LoadPanopticAnnotations',
        with_bbox=True,
        with_mask=True,
        with_seg=True,
        backend_args=backend_args),
    # Colour jitter on the original image, before any padding, as the authors (ADE20K only):
    # brightness +-32, contrast and saturation x[0.5, 1.5], hue +-18 deg, each with p = 0.5.
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    # Large-scale jitter: scale so that the image fits the crop, times a factor in [0.1, 2.0].
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    # Pad bottom/right to the crop with pixel value 0, i.e. before normalisation.
    dict(type='Pad', size=crop_size, pad_val=dict(img=0, masks=0, seg=255)),
    dict(
        type='RandomCrop',
        crop_size=crop_size,
        crop_type='absolute',
        recompute_bbox=True,
        allow_negative_crop=True),
    # Drop the instance masks the crop left empty.
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
        ann_file='ade20k_panoptic_train.json',
        data_prefix=dict(img='images/training/', seg='ade20k_panoptic_train/'),
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
        ann_file='ade20k_panoptic_val.json',
        data_prefix=dict(img='images/validation/', seg='ade20k_panoptic_val/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# mmdet's metric with the statistics of each image counted in memory (same results, 3x less
# time per large image): mmeomt/evaluation/panoptic_metric.py.
val_evaluator = dict(
    type='mmeomt.CocoPanopticMetric',
    ann_file=data_root + 'ade20k_panoptic_val.json',
    seg_prefix=data_root + 'ade20k_panoptic_val/',
    backend_args=backend_args)
test_evaluator = val_evaluator

# The authors' ADE20K panoptic models number classes in ADE20K's 150-class order; the dataset
# above (mmdet's ADE20KPanopticDataset, written by mmdet's ade20k2coco.py) lists the 100 things
# first, then the 50 stuff classes.  For each of its labels, the authors' class index, so their
# released class heads are permuted on load (EoMTDetector.checkpoint_class_order).
ade150_class_index = [
    7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37, 38, 39, 41, 42,
    43, 44, 45, 47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67, 69, 70, 71, 72, 73, 74, 75, 76,
    78, 80, 81, 82, 83, 85, 86, 87, 88, 89, 90, 92, 93, 95, 97, 98, 102, 103, 104, 107, 108, 110,
    111, 112, 115, 116, 118, 119, 120, 121, 123, 124, 125, 126, 127, 129, 130, 132, 133, 134, 135,
    136, 137, 138, 139, 142, 143, 144, 146, 147, 148, 149, 0, 1, 2, 3, 4, 5, 6, 9, 11, 13, 16, 17,
    21, 25, 26, 28, 29, 34, 40, 46, 48, 51, 52, 54, 59, 60, 61, 63, 68, 77, 79, 84, 91, 94, 96, 99,
    100, 101, 105, 106, 109, 113, 114, 117, 122, 128, 131, 140, 141, 145
]
