# EoMT-L, instance segmentation of your own COCO-format data, 640 x 640, fine-tuned from the
# released COCO instance model with a new class head (docs/custom_dataset.md).
#
# Expected layout under data_root (file names are free, the JSON lists them):
#   images/train/*.jpg, images/val/*.jpg
#   annotations/instances_train.json, annotations/instances_val.json
# Masks are polygons or RLE; `iscrowd=1` regions are ignored in training and evaluation.  The
# JSON's categories carry these class names, any ids, listed by
# increasing id in the order of `classes`.
_base_ = ['../eomt_vit-l_8xb2-12e_coco-instance-640.py']

# ---- what you change ------------------------------------------------------------------------
data_root = 'data/my_instances/'
classes = ['cell', 'mitosis']
max_iters = 20000                                 # the schedule's windows scale with it
load_from = ('https://huggingface.co/tue-mps/coco_instance_eomt_large_640/'
             'resolve/main/pytorch_model.bin')   # or an mmeomt checkpoint; None: DINOv2 only
# ---------------------------------------------------------------------------------------------

metainfo = dict(classes=classes)
model = dict(
    # Starting from an EoMT checkpoint, the DINOv2 weights are not needed (not downloaded).
    eomt=dict(num_classes=len(classes), backbone=dict(init_cfg=None) if load_from else dict()),
    loss=dict(num_classes=len(classes)),
    num_things_classes=len(classes),
    # COCO's class head (81 outputs) does not fit: it keeps its initialisation.
    skip_mismatched=['eomt.class_head'])

train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/')))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Validate and save a checkpoint ten times per run.
train_cfg = dict(max_iters=max_iters, val_interval=max(1, max_iters // 10))
default_hooks = dict(checkpoint=dict(interval=max(1, max_iters // 10)))
