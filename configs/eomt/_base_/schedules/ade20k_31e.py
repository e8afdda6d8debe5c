# ADE20K, 31 epochs: 20,210 training images / batch 16 = 1,263 iterations per epoch, x 31.
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=39153, val_interval=4000)
