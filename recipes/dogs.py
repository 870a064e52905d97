# Stanford Dogs with the paper's 448 setup.
_base_ = ['./_base_/models/cncnn_r50.py', './_base_/datasets/dogs.py', './_base_/schedules/paper_sgd.py']
# D = 256: the released code's width for every dataset but CUB's 200 classes.
model = dict(num_classes=120, head=dict(hidden=256))
# Schedule, batch 16 and learning rates: the paper's (paper_sgd.py). The set was "built using images
# and annotation from ImageNet" (its description), so the ImageNet backbone has seen these breeds, test
# images possibly included: compare only with results that start from ImageNet weights as well.
# Reference: no published plain ResNet-50 figure at 448 is cited here (none was found in a source we
# could cite).
