# Oxford Flowers-102 (2,040 train+val / 6,149 test, 102 classes) in its published layout.
# The published "train" is the small split (1,020); papers train on train+val, so does train_split.
# Aircraft's released preprocessing: these photos are about 500 pixels on their short side, and a
# resize to CUB's 600 would upsample them before the 448 crop.
_base_ = ['./aircraft.py']
dataset = dict(type='flowers', data_root='data/flowers-102', train_split='trainval')
