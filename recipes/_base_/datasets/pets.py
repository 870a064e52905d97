# Oxford-IIIT Pets (3,680 trainval / 3,669 test, 37 breeds), read by torchvision's OxfordIIITPet.
# Aircraft's released preprocessing: these photos are about 500 pixels wide, and a resize to CUB's
# 600 would upsample them before the 448 crop.
_base_ = ['./aircraft.py']
dataset = dict(type='pets', data_root='data/oxford-iiit-pet')
