#!/usr/bin/env python
"""Train a d2seg model: ``python tools/train.py --config-file X.yaml [--resume] [KEY VALUE ...]``.

Several processes: ``torchrun --nproc-per-node N tools/train.py ...`` (add ``--nnodes``,
``--node-rank``, ``--master-addr`` for several machines), or ``--num-gpus N`` on one GPU machine.
"""
import sys

from d2seg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
