# EoMT-L, ADE20K panoptic, 640x640, initialised from the COCO panoptic model:
# 50.6 PQ in the model zoo.
_base_ = [
    './_base_/models/eomt_vit-l_det.py',
    './_base_/datasets/ade20k_panoptic_640.py',
    './_base_/schedules/ade20k_31e.py',
    './_base_/default_runtime_det.py'
]

num_things_classes = 100
num_stuff_classes = 50
num_classes = num_things_classes + num_stuff_classes
model = dict(
    eomt=dict(
        # The COCO checkpoint below replaces the DINOv2 weights: skip downloading them.
        backbone=dict(img_size=640, init_cfg=None),
        num_classes=num_classes),
    loss=dict(num_classes=num_classes),
    num_things_classes=num_things_classes,
    num_stuff_classes=num_stuff_classes,
    # COCO's class head (134 outputs) does not fit ADE20K's (151): it keeps its initialisation,
    # as the authors' load_ckpt_class_head=False.  Every other weight must fit.
    skip_mismatched=['eomt.class_head'],
    # The released ADE20K weights use ADE20K's class order (see the dataset base file).
    checkpoint_class_order={{_base_.ade150_class_index}})

# COCO-panoptic pre-training, as the authors (--model.ckpt_path <COCO pytorch_model.bin>
# --model.load_ckpt_class_head False): their released COCO model, converted on load.  The
# final checkpoint of eomt_vit-l_8xb2-12e_coco-panoptic-640 works as well.  The
# annealing hook resets attn_mask_probs (0 at the end of COCO training).
load_from = ('https://huggingface.co/tue-mps/coco_panoptic_eomt_large_640/'
             'resolve/main/pytorch_model.bin')

# Masked-attention annealing, block by block (docs/method.md §2): block k loses its mask over
# one window (the schedule's annealing_window, a fraction of the run), the windows starting
# 1, 2, 3 and 4 windows into the run.
default_hooks = dict(
    mask_annealing=dict(
        start_fractions=[k * _base_.annealing_window for k in (1, 2, 3, 4)],
        end_fractions=[(k + 1) * _base_.annealing_window for k in (1, 2, 3, 4)]))
