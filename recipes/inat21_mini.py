# iNaturalist 2021 mini with the paper's 448 setup, shortened to 30 epochs.
_base_ = ['./_base_/models/cncnn_r50.py', './_base_/datasets/inat21_mini.py', './_base_/schedules/paper_sgd.py']
# D = 256: the released code's width for every dataset but CUB's 200 classes.
model = dict(num_classes=10000, head=dict(hidden=256))
# 500,000 images are 31,250 steps an epoch at batch 16: the paper's 300 epochs would be 9.4 M steps.
# 30 epochs show each image 30 times (15 M images, 8 times the paper's CUB schedule of 5,994 x 300);
# the cosine follows max_epochs. Validation reads 100,000 images, so it runs every 5th epoch.
train_cfg = dict(max_epochs=30, val_interval=5)
# The test split is the published val: the 2021 test labels are not public. `train_split='train_full'`
# (--cfg-options dataset.train_split=train_full) reads the 2.7 M-image train.json instead.
# Reference: no published ResNet-50 figure at 448 on train_mini is cited here (none was found in a
# source we could cite).
