# The tiny panoptic test model as an instance model (5 thing classes, mmdet scope).
_base_ = './eomt_tiny_panoptic.py'

model = dict(
    eomt=dict(num_classes=5),
    num_things_classes=5,
    num_stuff_classes=0,
    test_cfg=dict(panoptic_on=False, instance_on=True, max_per_image=10))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(
        type='KeyMapper',
        transforms=[dict(type='Pad', size=(64, 64), pad_val=dict(img=0))],
        remapping=dict(img='img', pad_shape='pad_shape')),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'pad_shape',
                   'scale_factor'))
]
test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='mmeomt.SyntheticInstanceDataset',
        data_root='data/synthetic/coco/',
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
