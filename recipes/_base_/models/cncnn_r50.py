# CN-CNN with an ImageNet ResNet-50 (docs/model.md). num_classes is set from the dataset.
model = dict(
    type='CNCNN',
    num_classes=200,
    backbone=dict(type='resnet50', pretrained='IMAGENET1K_V1'),  # torchvision weights the paper used
    fusion=dict(type='convlstm', channels=256),                  # HL pathway, C = 256
    attention=dict(type='spatial_channel', reduction=16, mask_size='shared'),  # LH pathway
    head=dict(type='cncnn', hidden=512),                         # D: released code 512 for K=200, else 256
)
