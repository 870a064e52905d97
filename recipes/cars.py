# Stanford Cars with the paper's setup (Table 1: 94.9 top-1).
_base_ = ['./_base_/cncnn_r50.py', './_base_/paper_schedule.py']
model = dict(num_classes=196, head=dict(hidden=256))
dataset = dict(type='cars', data_root='data/stanford_cars')
# Released config: resize 448x448 -> random crop 448 -> flip; batch 8 (paper: 16).
preprocess = dict(resize=448, crop=448, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
