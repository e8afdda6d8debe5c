# Cityscapes, 107 epochs: 2,975 training images / batch 16 = 185 iterations per epoch, x 107.
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=19795, val_interval=4000)

# Mask annealing (docs/method.md §2): the authors' windows are 3,317 iterations, a sixth of
# 19,902 = 107 x 186 (epochs that keep their last, partial batch); kept exactly, as a fraction of
# this run (3317 / 19795 = 31 / 185), so that a shorter or longer run scales them.
annealing_window = 3317 / 19795
