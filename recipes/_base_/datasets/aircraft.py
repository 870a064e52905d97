# FGVC-Aircraft 2013b, variant level (6,667 trainval / 3,333 test, 100 classes). The paper trains on
# trainval and reports test; `--val-split val` trains on train, chooses on FGVC's val split, tests once.
dataset = dict(type='aircraft', data_root='data/fgvc-aircraft-2013b')
# Released config: resize 512x512 -> random crop 448 -> flip (test: center crop 448); ImageNet mean/std.
preprocess = dict(resize=512, crop=448)
