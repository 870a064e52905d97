"""Built-in datasets; importing this package registers them in ``cncnn_cli.registry.DATASETS``."""
from .aircraft import Aircraft
from .base import FineGrainedDataset, UnreadableImageWarning, build_dataset
from .cars import StanfordCarsDataset
from .cub import CUB
from .demo import Demo
from .imagefolder import ImageFolder

__all__ = [
    "CUB",
    "Aircraft",
    "Demo",
    "FineGrainedDataset",
    "ImageFolder",
    "StanfordCarsDataset",
    "UnreadableImageWarning",
    "build_dataset",
]
