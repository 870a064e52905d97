# NABirds (23,929 train / 24,633 test, 555 classes) in its published layout.
# CUB's released preprocessing (resize 600 -> random crop 448 + flip), which TransFG's data_utils.py
# uses for CUB, NABirds and Dogs alike: the same kind of photos.
_base_ = ['./cub.py']
dataset = dict(type='nabirds', data_root='data/nabirds')
