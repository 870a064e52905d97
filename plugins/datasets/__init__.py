"""Built-in dataset readers; importing this package registers them in ``cncnn_cli.registry.DATASETS``.

Their base class and ``build_dataset`` are core API (``cncnn_cli.data.dataset``), re-exported here.
"""
from .aircraft import Aircraft
from cncnn_cli.data.dataset import FineGrainedDataset, UnreadableImageWarning, build_dataset
from .cars import StanfordCarsDataset
from .cub import CUB
from .demo import Demo
from .dogs import StanfordDogs
from .flowers import Flowers
from .imagefolder import ImageFolder
from .inat import INaturalist2021
from .nabirds import NABirds
from .pets import Pets

__all__ = [
    "CUB",
    "Aircraft",
    "Demo",
    "FineGrainedDataset",
    "Flowers",
    "INaturalist2021",
    "ImageFolder",
    "NABirds",
    "Pets",
    "StanfordCarsDataset",
    "StanfordDogs",
    "UnreadableImageWarning",
    "build_dataset",
]
