# CUB-200-2011 with the paper's setup (Table 1: 88.9 top-1).
_base_ = ['./_base_/models/cncnn_r50.py', './_base_/datasets/cub.py', './_base_/schedules/paper_sgd.py']
model = dict(num_classes=200)  # D = 512 for K = 200, as the base model
