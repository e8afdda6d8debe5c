# ADE20K panoptic, 1280 crop: ade20k_panoptic_640.py with the crop changed (the pipelines are
# restated because a list cannot be re-parametrised through _base_).
_base_ = './ade20k_panoptic_640.py'
backend_args = None
crop_size = (1280, 1280)

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

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
