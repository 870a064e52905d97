# The paper's optimisation (Sec. 3.1): SGD, momentum 0.9, weight decay 5e-4, 300 epochs,
# lr 0.1 for the new modules and 0.001 (= 0.1 x 0.01) for the backbone; cosine schedule
# (released configs: 100 epochs).
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.01)}),
)
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, eta_min_ratio=0.0)]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
batch_size = 16
# The learning rates above are for the paper's total batch of 16 (per-device batch x processes x
# --accumulate). A run with another effective batch gets them scaled linearly (mmengine's auto-scale-lr)
# and says so; `--no-scale-lr` keeps them; `--effective-batch 16` restores the paper's batch on any GPU.
auto_scale_lr = dict(enable=True, base_batch_size=16)
accumulate = 1
# The paper's protocol: the best epoch is chosen on the test split (so is the released code's). For a
# number that did not peek at test, `--val-fraction 0.1` chooses on held-out training images instead
# (FGVC-Aircraft: `--val-split val`); the test split is then evaluated once (docs/reproducing.md).
val_fraction = 0.0
seed = 0
