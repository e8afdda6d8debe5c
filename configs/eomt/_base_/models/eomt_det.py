# EoMT for panoptic / instance segmentation with mmdet (docs/method.md §1): the ViT-L defaults,
# COCO panoptic classes and a 640 crop.  eomt_vit-{s,b,l,g}_det.py set the encoder size; model
# configs change classes, crop and test mode.
num_things_classes = 80
num_stuff_classes = 53
num_classes = num_things_classes + num_stuff_classes

# ImageNet statistics on RGB 0-255 pixels.  Padding is done in the data pipeline (pixel value 0,
# i.e. before normalisation, as the authors), so the pre-processor pads nothing.
data_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=1)

model = dict(
    type='mmeomt.EoMTDetector',
    data_preprocessor=data_preprocessor,
    eomt=dict(
        type='mmeomt.EoMT',
        backbone=dict(
            type='mmeomt.EoMTViT',
            arch='large',
            img_size=640,  # = the training crop; the position grid is img_size / 16
            patch_size=16,
            num_register_tokens=4,
            # timm weights of DINOv2-L/14 with registers; converted and resampled to /16 on load.
            init_cfg=dict(
                type='Pretrained',
                checkpoint='https://huggingface.co/timm/vit_large_patch14_reg4_dinov2.lvd142m/'
                'resolve/main/pytorch_model.bin')),
        num_classes=num_classes,
        num_queries=200,
        num_blocks=4),
    loss=dict(type='mmeomt.EoMTLoss', num_classes=num_classes),
    num_things_classes=num_things_classes,
    num_stuff_classes=num_stuff_classes,
    test_cfg=dict(
        panoptic_on=True,
        semantic_on=False,
        instance_on=False,
        max_per_image=100,
        object_mask_thr=0.8,
        iou_thr=0.8,
        filter_low_score=True))
