# Stanford Cars (8,144 train / 8,041 test, 196 classes): any of the copies docs/datasets.md lists.
dataset = dict(type='cars', data_root='data/stanford_cars')
# Released config: resize 448x448 -> random crop 448 -> flip; ImageNet mean/std.
preprocess = dict(resize=448, crop=448)
