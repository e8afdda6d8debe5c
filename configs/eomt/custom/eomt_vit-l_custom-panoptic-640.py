# EoMT-L, panoptic segmentation of your own COCO-panoptic-format data, 640 x 640, fine-tuned
# from the released COCO panoptic model with a new class head (docs/custom_dataset.md).
#
# Expected layout under data_root (file names are free, the JSON lists them):
#   images/train/*.jpg, images/val/*.jpg
#   annotations/panoptic_train.json + annotations/panoptic_train/*.png   (segment-id PNGs)
#   annotations/panoptic_val.json   + annotations/panoptic_val/*.png
# The JSON's categories carry these class names, any ids, listed by increasing id in the order
# of `classes` (things, then stuff); `isthing` comes from thing_classes below, not the file.
_base_ = ['../eomt_vit-l_8xb2-12e_coco-panoptic-640.py']

# ---- what you change ------------------------------------------------------------------------
data_root = 'data/my_panoptic/'
thing_classes = ['cell', 'mitosis']               # countable objects: one segment each
stuff_classes = ['stroma', 'background']          # amorphous regions: one segment per class
max_iters = 20000                                 # the schedule's windows scale with it
load_from = ('https://huggingface.co/tue-mps/coco_panoptic_eomt_large_640/'
             'resolve/main/pytorch_model.bin')   # or an mmeomt checkpoint; None: DINOv2 only
# ---------------------------------------------------------------------------------------------

classes = thing_classes + stuff_classes
metainfo = dict(classes=classes, thing_classes=thing_classes, stuff_classes=stuff_classes)
model = dict(
    # Starting from an EoMT checkpoint, the DINOv2 weights are not needed (not downloaded).
    eomt=dict(num_classes=len(classes), backbone=dict(init_cfg=None) if load_from else dict()),
    loss=dict(num_classes=len(classes)),
    num_things_classes=len(thing_classes),
    num_stuff_classes=len(stuff_classes),
    # COCO's class head (134 outputs) does not fit: it keeps its initialisation.  Every other
    # weight of load_from must fit, or loading fails with the list of keys.
    skip_mismatched=['eomt.class_head'])

train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/panoptic_train.json',
        data_prefix=dict(img='images/train/', seg='annotations/panoptic_train/')))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/panoptic_val.json',
        data_prefix=dict(img='images/val/', seg='annotations/panoptic_val/')))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/panoptic_val.json',
    seg_prefix=data_root + 'annotations/panoptic_val/')
test_evaluator = val_evaluator

# Validate and save a checkpoint ten times per run.
train_cfg = dict(max_iters=max_iters, val_interval=max(1, max_iters // 10))
default_hooks = dict(checkpoint=dict(interval=max(1, max_iters // 10)))
