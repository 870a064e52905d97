# FGVC-Aircraft (variants, trainval vs test) with the paper's setup (Table 1: 94.1 top-1).
_base_ = ['./_base_/cncnn_r50.py', './_base_/paper_schedule.py']
model = dict(num_classes=100, head=dict(hidden=256))
dataset = dict(type='aircraft', data_root='data/fgvc-aircraft-2013b')
# The paper trains on trainval and reports test. `--val-split val` trains on train, chooses the
# checkpoint on FGVC's published val split, and tests once.
# Released config: resize 512x512 -> random crop 448 -> flip (test: center crop 448).
preprocess = dict(resize=512, crop=448, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
