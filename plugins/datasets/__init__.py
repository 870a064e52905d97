"""Built-in dataset readers; importing this package registers them in ``cncnn_cli.registry.DATASETS``.

Their base class and ``build_dataset`` are core API (``cncnn_cli.data.dataset``), re-exported here.
"""
from .aircraft import Aircraft
from cncnn_cli.data.dataset import FineGrainedDataset, UnreadableImageWarning, build_dataset
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
