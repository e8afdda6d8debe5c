# COCO, 24 epochs (the "2x" schedule of EoMT-S/B): 7,391 iterations per epoch x 24.
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=177384, val_interval=5000)
