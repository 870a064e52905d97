"""Data: the dataset base API and builder, reading any image as RGB, transforms, collation, `data check` and `data speed`."""
