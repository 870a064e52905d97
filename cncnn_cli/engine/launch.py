"""How the processes of a run learn their place: torchrun's variables, or Slurm's.

Under ``--launcher slurm`` ``srun`` starts every process (one task per GPU) and sets
``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and ``SLURM_NODELIST``. cncnn turns them
into torch's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, as
mmengine's ``init_dist('slurm')`` does, except that the first host of the node list is read
from the list itself rather than from ``scontrol show hostnames``: the same answer, also where
the job's container has no Slurm client.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

from cncnn_cli.errors import CncnnError

#: Set by ``srun`` in every task; ``--launcher slurm`` needs them all.
SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODELIST")
#: torch's default rendezvous port, used when neither MASTER_PORT nor SLURM_JOB_ID is set.
DEFAULT_PORT = 29500


def process_count(launcher: str) -> int:
    """Processes taking part in training: torchrun's WORLD_SIZE, srun's SLURM_NTASKS, or 1."""
    if launcher == "slurm":
        return int(slurm_environment(os.environ)["WORLD_SIZE"])
    return int(os.environ.get("WORLD_SIZE", "1")) if launcher == "pytorch" else 1


def process_rank(launcher: str) -> int:
    """This process's rank, known before the process group exists."""
    if launcher == "slurm":
        return int(slurm_environment(os.environ)["RANK"])
    return int(os.environ.get("RANK", "0")) if launcher == "pytorch" else 0


def local_rank(launcher: str) -> int:
    """This process's place on its node (torchrun's LOCAL_RANK, srun's SLURM_LOCALID): its GPU."""
    if launcher == "slurm":
        return int(slurm_environment(os.environ)["LOCAL_RANK"])
    return int(os.environ.get("LOCAL_RANK", "0")) if launcher == "pytorch" else 0


def export_slurm_environment() -> None:
    """Give torch (and mmengine) the variables of this Slurm task, before the process group is made."""
    os.environ.update(slurm_environment(os.environ))


def slurm_environment(env: Mapping[str, str]) -> dict[str, str]:
    """torch's distributed variables for the Slurm task described by ``env``.

    MASTER_ADDR and MASTER_PORT given in ``env`` win. Otherwise the address is the node list's
    first host, and the port follows from the job id, so that two jobs sharing a node do not
    meet on one port.
    """
    missing = [name for name in SLURM_VARIABLES if not env.get(name)]
    if missing:
        raise CncnnError(f"--launcher slurm needs the variables srun sets in each task ({', '.join(missing)} "
                         f"missing): start the command with srun, one task per GPU")
    job = env.get("SLURM_JOB_ID", "")
    port = 15000 + int(job) % 20000 if job.isdigit() else DEFAULT_PORT
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"], "LOCAL_RANK": env["SLURM_LOCALID"],
            "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(env["SLURM_NODELIST"]),
            "MASTER_PORT": env.get("MASTER_PORT") or str(port)}


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list, as ``scontrol show hostnames`` lists it first.

    ``gpu[03-04,07],cpu1`` → ``gpu03``; ``rack[1-2]-n[01-04]`` → ``rack1-n01``.
    """
    first = re.split(r",(?![^\[]*\])", nodelist.strip(), maxsplit=1)[0]
    return re.sub(r"\[([^\],-]+)[^\]]*\]", r"\1", first)
