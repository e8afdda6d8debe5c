# COCO instance, 12 epochs: 117,266 images with annotations / batch 16 = 7,329 iterations
# per epoch, x 12.  (The authors validate every 2 epochs.)
_base_ = './eomt_adamw.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=87948, val_interval=5000)
