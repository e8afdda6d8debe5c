# COCO, 12 epochs of 7,391 iterations at batch 16 (118,287 train2017 images, those without
# segments skipped; the authors' 2-epoch annealing windows are 14,782 = 2 x 7,391 iterations).
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=88692, val_interval=5000)
