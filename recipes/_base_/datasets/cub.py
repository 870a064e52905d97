# CUB-200-2011 (5,994 train / 5,794 test, 200 classes) in its published layout.
dataset = dict(type='cub', data_root='data/CUB_200_2011')
# Released config: resize 600x600 -> random crop 448 -> flip (test: center crop 448); ImageNet mean/std.
preprocess = dict(resize=600, crop=448)
