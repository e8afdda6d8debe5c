# EoMT for semantic segmentation with mmseg (docs/method.md §1): the ViT-L defaults, ADE20K
# classes and a 512 crop.  eomt_vit-{s,b,l,g}_seg.py set the encoder size; model configs change
# classes and crop.
num_classes = 150

# ImageNet statistics on RGB 0-255 pixels.  The training pipeline already pads to the crop with
# pixel value 0 (before normalisation, as the authors); `size` only satisfies mmseg's batching.
data_preprocessor = dict(
    type='mmeomt.EoMTSegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))

model = dict(
    type='mmeomt.EoMTSegmentor',
    data_preprocessor=data_preprocessor,
    eomt=dict(
        type='mmeomt.EoMT',
        backbone=dict(
            type='mmeomt.EoMTViT',
            arch='large',
            img_size=(512, 512),  # = the training crop; the position grid is img_size / 16
            patch_size=16,
            num_register_tokens=4,
            # timm weights of DINOv2-L/14 with registers; converted and resampled to /16 on load.
            init_cfg=dict(
                type='Pretrained',
                checkpoint='https://huggingface.co/timm/vit_large_patch14_reg4_dinov2.lvd142m/'
                'resolve/main/pytorch_model.bin')),
        num_classes=num_classes,
        num_queries=100,
        num_blocks=4),
    loss=dict(type='mmeomt.EoMTLoss', num_classes=num_classes),
    num_classes=num_classes,
    ignore_index=255,
    # Short side resized to the crop by the test pipeline, crop-sized windows along the long side.
    test_cfg=dict(mode='window', crop_size=(512, 512)))
