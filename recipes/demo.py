# Built-in synthetic birds (no download): the quick start's main job, minutes on a 2-core CPU.
_base_ = ['./_base_/paper_schedule.py']
model = dict(
    type='CNCNN',
    num_classes=10,
    backbone=dict(type='resnet18', pretrained=None),  # offline: trained from scratch
    fusion=dict(type='convlstm', channels=64),
    attention=dict(type='spatial_channel', reduction=16, mask_size='shared'),
    head=dict(type='cncnn', hidden=64),
)
dataset = dict(type='demo', data_root='')
preprocess = dict(resize=72, crop=64, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
# From scratch the backbone learns at the full rate (the paper's 0.01x is for ImageNet weights).
optim_wrapper = dict(optimizer=dict(lr=0.05), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
train_cfg = dict(max_epochs=8)
batch_size = 32
auto_scale_lr = dict(base_batch_size=32)  # the learning rate above is tuned for this batch
workers = 0
log_interval = 5
