# iNaturalist 2021 mini (500,000 train_mini / 100,000 val, 10,000 species) in its published layout.
# Aircraft's released preprocessing: the images are at most 500 pixels on their long side (the
# dataset's README), so the 448 crop sees them near their stored size.
_base_ = ['./aircraft.py']
dataset = dict(type='inat21', data_root='data/inat2021', train_split='train_mini')
