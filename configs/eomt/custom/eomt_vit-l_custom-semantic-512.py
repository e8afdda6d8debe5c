# EoMT-L, semantic segmentation of your own image + label-PNG data, 512 x 512, fine-tuned from
# the released ADE20K semantic model with a new class head (docs/custom_dataset.md).
#
# Expected layout under data_root (a label PNG has the image's stem):
#   images/train/*.jpg, images/val/*.jpg
#   annotations/train/*.png, annotations/val/*.png     single-channel, value = class index
# Label values: 0 .. len(classes) - 1 for the classes and 255 for "ignore".  If 0 means
# "unlabelled" and the classes are 1 .. K in your files (ADE20K's convention), set
# reduce_zero_label = True.
_base_ = ['../eomt_vit-l_8xb2-31e_ade20k-semantic-512.py']

# ---- what you change ------------------------------------------------------------------------
data_root = 'data/my_semantic/'
classes = ['background', 'stroma', 'cell']
reduce_zero_label = False
max_iters = 20000                                 # the schedule's windows scale with it
load_from = ('https://huggingface.co/tue-mps/ade20k_semantic_eomt_large_512/'
             'resolve/main/pytorch_model.bin')   # or an mmeomt checkpoint; None: DINOv2 only
# ---------------------------------------------------------------------------------------------

metainfo = dict(classes=classes)
model = dict(
    # Starting from an EoMT checkpoint, the DINOv2 weights are not needed (not downloaded).
    eomt=dict(num_classes=len(classes), backbone=dict(init_cfg=None) if load_from else dict()),
    loss=dict(num_classes=len(classes)),
    num_classes=len(classes),
    # ADE20K's class head (151 outputs) does not fit: it keeps its initialisation.
    skip_mismatched=['eomt.class_head'])

dataset = dict(
    type='mmeomt.SegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=reduce_zero_label)
train_dataloader = dict(
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/train', seg_map_path='annotations/train')))
val_dataloader = dict(
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/val', seg_map_path='annotations/val')))
test_dataloader = val_dataloader

# Validate and save a checkpoint ten times per run.
train_cfg = dict(max_iters=max_iters, val_interval=max(1, max_iters // 10))
default_hooks = dict(checkpoint=dict(interval=max(1, max_iters // 10)))
