# FGVC-Aircraft (variants, trainval vs test) with the paper's setup (Table 1: 94.1 top-1).
_base_ = ['./_base_/models/cncnn_r50.py', './_base_/datasets/aircraft.py', './_base_/schedules/paper_sgd.py']
model = dict(num_classes=100, head=dict(hidden=256))
