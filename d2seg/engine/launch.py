"""Multi-process runs on torch.distributed: started by torchrun, or spawned with ``--num-gpus``.

Two ways to get N processes, one per device:

* ``torchrun --nproc-per-node N tools/train.py ...`` (``--nnodes/--node-rank/--master-addr`` for
  several machines) starts the processes and describes each one in its environment (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR/PORT``);
  :func:`init_from_env` turns that into a process group: gloo on CPU, NCCL on GPU.
* ``d2seg train --num-gpus N`` spawns the processes itself through detectron2's
  :func:`detectron2.engine.launch` (GPUs only, as upstream): :func:`spawn`.

Either way detectron2.utils.comm then works as detectron2 expects: rank, world size, and the
per-machine process group behind ``comm.get_local_rank()`` / ``comm.get_local_size()`` (which
detectron2's DistributedDataParallel set-up uses to pick the GPU).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

from d2seg.errors import D2SegError

logger = logging.getLogger(__name__)

# torchrun's variables that every worker has; without them this is not a torchrun worker
_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_TORCHRUN_HINT = "start the processes with torchrun, e.g. torchrun --nproc-per-node 2 tools/train.py ..."


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process sits in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int


def _int_var(environ, name: str, default: int | None = None) -> int:
    value = environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise D2SegError(f"environment variable {name}={value!r} is not an integer",
                         where=name, hint=_TORCHRUN_HINT) from None


def process_info(environ=None) -> ProcessInfo | None:
    """This process's place in a torchrun job, or None when torchrun did not start it."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    missing = [name for name in _REQUIRED if name not in environ]
    if missing:
        raise D2SegError(f"WORLD_SIZE is set but {', '.join(missing)} is not", where="environment",
                         hint=_TORCHRUN_HINT)
    world_size = _int_var(environ, "WORLD_SIZE")
    rank = _int_var(environ, "RANK")
    local_rank = _int_var(environ, "LOCAL_RANK")
    local_world_size = _int_var(environ, "LOCAL_WORLD_SIZE", default=world_size)
    if not (0 <= rank < world_size and 0 <= local_rank < local_world_size <= world_size):
        raise D2SegError(f"inconsistent process numbers: RANK {rank}, WORLD_SIZE {world_size}, "
                         f"LOCAL_RANK {local_rank}, LOCAL_WORLD_SIZE {local_world_size}",
                         where="environment", hint=_TORCHRUN_HINT)
    # torchrun numbers its machines (agents) with GROUP_RANK; other launchers may not set it
    node_rank = _int_var(environ, "GROUP_RANK", default=rank // local_world_size)
    return ProcessInfo(rank, world_size, local_rank, local_world_size, node_rank,
                       environ["MASTER_ADDR"], _int_var(environ, "MASTER_PORT"))


def backend_for(device: str) -> str:
    """NCCL for CUDA models, gloo for CPU ones."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def _default_timeout() -> timedelta:
    from detectron2.engine.launch import DEFAULT_TIMEOUT

    return DEFAULT_TIMEOUT


def init_from_env(device: str = "auto", timeout: timedelta | None = None) -> ProcessInfo | None:
    """Join the torchrun job this process belongs to; a no-op outside torchrun or when a
    process group exists already (detectron2's launch made it).

    ``device`` is the model's (cfg.MODEL.DEVICE): ``cuda`` gives NCCL and makes GPU LOCAL_RANK
    this process's device, ``cpu`` gives gloo, ``auto`` picks CUDA when there is a GPU.
    """
    import torch
    import torch.distributed as dist

    info = process_info()
    if info is None or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise D2SegError("this PyTorch build has no torch.distributed", where="environment",
                         hint="install a PyTorch build with distributed support, or run one process")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise D2SegError(f"LOCAL_RANK {info.local_rank} has no GPU: this machine has {count}",
                             where="environment",
                             hint=f"use --nproc-per-node {count} or fewer (or MODEL.DEVICE cpu)")
        torch.cuda.set_device(info.local_rank)
    backend = backend_for(device)
    dist.init_process_group(backend=backend, init_method="env://", world_size=info.world_size,
                            rank=info.rank, timeout=timeout or _default_timeout())
    create_local_process_group(info)
    from detectron2.utils import comm

    comm.synchronize()
    logger.info("process %d of %d (local %d of %d on machine %d), %s backend",
                info.rank, info.world_size, info.local_rank, info.local_world_size,
                info.node_rank, backend)
    return info


def create_local_process_group(info: ProcessInfo) -> None:
    """Give detectron2.utils.comm its per-machine process group (the one detectron2's
    ``launch()`` makes for the processes it spawns), grouping ranks by torchrun's machine
    number. Every rank must call this: creating a group is a collective operation."""
    import torch.distributed as dist
    from detectron2.utils import comm

    if hasattr(comm, "create_local_process_group"):  # detectron2 > 0.6 has an API for it
        comm.create_local_process_group(info.local_world_size)
        return
    machines = [None] * info.world_size
    dist.all_gather_object(machines, (info.node_rank, info.local_rank))
    by_machine: dict[int, list[int]] = {}
    for rank, (node, _local) in enumerate(machines):
        by_machine.setdefault(node, []).append(rank)
    ranks = sorted(by_machine.values())
    local_group, _ = dist.new_subgroups_by_enumeration(ranks)
    # detectron2 v0.6 reads this module attribute and offers no function to set it
    comm._LOCAL_PROCESS_GROUP = local_group
    if (comm.get_local_rank(), comm.get_local_size()) != (info.local_rank, info.local_world_size):
        raise RuntimeError(f"per-machine group of rank {info.rank} does not match torchrun's numbering: "
                           f"local rank {comm.get_local_rank()}/{comm.get_local_size()} vs "
                           f"LOCAL_RANK {info.local_rank}/{info.local_world_size}")


def check_ready_to_train(cfg) -> None:
    """What several training processes need, checked before any work starts.

    SOLVER.IMS_PER_BATCH is the batch of all processes together, so it must split evenly.
    detectron2's ``create_ddp_model`` (used by DefaultTrainer) passes ``device_ids``, which
    DistributedDataParallel refuses for a CPU model; d2seg's build of detectron2 leaves them out
    for CPU models. Try it on a one-weight model so a detectron2 without that fix is one clear
    line rather than a traceback. Every rank must call this (building DistributedDataParallel
    is collective); a no-op with one process."""
    import torch
    from detectron2.engine.defaults import create_ddp_model
    from detectron2.utils import comm

    world = comm.get_world_size()
    if world == 1:
        return
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise D2SegError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} (the batch of all processes "
                         f"together) does not split over {world} processes", where="SOLVER.IMS_PER_BATCH",
                         hint=f"use a multiple of {world}")
    if str(cfg.MODEL.DEVICE).startswith("cuda"):
        return
    try:
        create_ddp_model(torch.nn.Linear(1, 1))
    except ValueError:
        raise D2SegError(
            "the installed detectron2 cannot train on CPU with several processes "
            "(its create_ddp_model gives DistributedDataParallel device_ids for a CPU model)",
            where="detectron2", hint="run `d2seg setup --force` to install d2seg's build of "
            "detectron2, or train on GPUs") from None


def shutdown() -> None:
    """Leave the process groups, and let their worker threads end before the interpreter does.

    gloo runs each collective on a worker thread, which lets go of the collective's tensors
    just after the caller has moved on; letting go of a tensor Python also sees takes the GIL.
    ``destroy_process_group`` joins those threads only when nothing else holds the group, and
    detectron2.utils.comm holds two: the per-machine group (set by
    :func:`create_local_process_group`) and its cached global gloo group. Left alive, a
    thread could still be letting go during interpreter shutdown, when it may no longer take
    the GIL, and torch 2.14 then aborted the finished process ("terminate called without an
    active exception", exit -6) in about 1 run in 20. Dropping those references (and any
    unreachable object, such as a finished trainer's DistributedDataParallel model) first
    makes ``destroy_process_group`` end the threads here."""
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    from detectron2.utils import comm

    comm._LOCAL_PROCESS_GROUP = None  # detectron2 v0.6 has no function to unset it either
    cached_group = getattr(comm, "_get_global_gloo_group", None)
    if hasattr(cached_group, "cache_clear"):
        cached_group.cache_clear()
    gc.collect()
    dist.destroy_process_group()


def _run_reporting_user_errors(job, args) -> None:
    """What each spawned process runs: the job, with a user error as one line and exit 2
    (the parent's CLI cannot print what happens in a child)."""
    try:
        job(args)
    except D2SegError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        sys.exit(2)


def spawn(job, args, *, num_gpus: int, num_machines: int = 1, machine_rank: int = 0,
          dist_url: str = "auto") -> int:
    """Run ``job(args)`` in ``num_gpus`` processes on each of ``num_machines`` machines with
    detectron2's :func:`~detectron2.engine.launch` (one GPU each, NCCL). ``job`` must be a
    module-level function and ``args`` picklable. Returns the exit status (0, or 2 when a
    process stopped on a user error it has already printed)."""
    import torch
    import torch.multiprocessing as mp
    from detectron2.engine import launch

    if num_gpus < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise D2SegError(f"--num-gpus {num_gpus}, --num-machines {num_machines}, --machine-rank "
                         f"{machine_rank}: need num-gpus >= 1 and 0 <= machine-rank < num-machines",
                         where="command line")
    if process_info() is not None and num_gpus * num_machines > 1:
        raise D2SegError("--num-gpus/--num-machines start processes themselves, but this process "
                         "was started by torchrun", where="command line",
                         hint="use one or the other: under torchrun leave out --num-gpus")
    if num_gpus * num_machines > 1:
        if not torch.cuda.is_available():
            raise D2SegError(f"--num-gpus {num_gpus} needs CUDA GPUs and this machine has none",
                             where="command line", hint="on CPU start several processes with torchrun: "
                             f"torchrun --nproc-per-node {num_gpus} tools/train.py ...")
        if num_gpus > torch.cuda.device_count():
            raise D2SegError(f"--num-gpus {num_gpus} but this machine has {torch.cuda.device_count()} GPUs",
                             where="command line")
        if num_machines > 1 and dist_url == "auto":
            raise D2SegError("several machines need the address of machine 0", where="--dist-url",
                             hint="give --dist-url tcp://HOST:PORT (machine 0's address, a free port)")
    try:
        launch(_run_reporting_user_errors, num_gpus, num_machines=num_machines,
               machine_rank=machine_rank, dist_url=dist_url, args=(job, args))
    except mp.ProcessExitedException as e:
        if e.exit_code == 2:
            return 2
        raise
    return 0
