# COCO, 12 epochs of 7,391 iterations at batch 16 (118,287 train2017 images, those without
# segments skipped; the authors' 2-epoch annealing windows are 14,782 = 2 x 7,391 iterations).
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=88692, val_interval=5000)

# Mask annealing (docs/method.md §2): each block's window is a sixth of the run (the authors'
# 14,782 iterations = 2 epochs); the model configs place the windows in units of it.
annealing_window = 1 / 6
