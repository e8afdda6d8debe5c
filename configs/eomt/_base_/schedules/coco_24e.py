# COCO, 24 epochs (the "2x" schedule of EoMT-S/B): 7,391 iterations per epoch x 24.
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=177384, val_interval=5000)

# Mask annealing (docs/method.md §2): each block's window is a sixth of the run (the authors'
# 29,564 iterations = 4 epochs); the model configs place the windows in units of it.
annealing_window = 1 / 6
