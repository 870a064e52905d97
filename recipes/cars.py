# Stanford Cars with the paper's setup (Table 1: 94.9 top-1; released config: batch 8, paper: 16).
_base_ = ['./_base_/models/cncnn_r50.py', './_base_/datasets/cars.py', './_base_/schedules/paper_sgd.py']
model = dict(num_classes=196, head=dict(hidden=256))
