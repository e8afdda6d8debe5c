# COCO instance, 12 epochs: 117,266 images with annotations / batch 16 = 7,329 iterations
# per epoch, x 12.  (The authors validate every 2 epochs.)
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=87948, val_interval=5000)

# Mask annealing (docs/method.md §2): the authors reuse the COCO panoptic windows of 14,782
# iterations (2 panoptic epochs of 7,391), a little more than a sixth of this run; kept exactly,
# as a fraction of it, so that a shorter or longer run scales them.
annealing_window = 14782 / 87948
