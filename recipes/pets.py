# Oxford-IIIT Pets with the paper's 448 setup.
_base_ = ['./_base_/models/cncnn_r50.py', './_base_/datasets/pets.py', './_base_/schedules/paper_sgd.py']
# D = 256: the released code's width for every dataset but CUB's 200 classes.
model = dict(num_classes=37, head=dict(hidden=256))
# Trains on the published trainval and tests on test, the set's only protocol; it has no val split, so
# `--val-fraction 0.1` is the way to choose the checkpoint without test.
# Schedule, batch 16 and learning rates: the paper's (paper_sgd.py).
# Reference: no published ResNet-50 figure at 448 on this split is cited here (none was found in a
# source we could cite).
