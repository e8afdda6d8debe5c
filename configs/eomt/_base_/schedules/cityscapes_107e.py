# Cityscapes, 107 epochs: 2,975 training images / batch 16 = 185 iterations per epoch, x 107.
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=19795, val_interval=4000)
