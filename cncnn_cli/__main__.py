"""``python -m cncnn_cli`` (used by torchrun: ``torchrun ... -m cncnn_cli train RECIPE``)."""

from cncnn_cli.cli.main import run

run()
