# CUB-200-2011 with the paper's setup (Table 1: 88.9 top-1).
_base_ = ['./_base_/cncnn_r50.py', './_base_/paper_schedule.py']
model = dict(num_classes=200, head=dict(hidden=512))
dataset = dict(type='cub', data_root='data/CUB_200_2011')
# Released config: resize 600x600 -> random crop 448 -> flip (test: center crop 448).
preprocess = dict(resize=600, crop=448, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
