# Stanford Dogs (12,000 train / 8,580 test, 120 classes) in its published layout.
# CUB's released preprocessing (resize 600 -> random crop 448 + flip), which TransFG's data_utils.py
# uses for CUB, NABirds and Dogs alike.
_base_ = ['./cub.py']
dataset = dict(type='dogs', data_root='data/stanford_dogs')
