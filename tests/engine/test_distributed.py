"""Several processes on torch.distributed (gloo, CPU): torchrun's numbering reaches detectron2's
comm, 2-process training writes only from rank 0, and a 2-process evaluation gathers every
image's predictions and scores exactly like a 1-process evaluation of the same checkpoint, and
``d2seg eval`` under torchrun writes the same predictions and one report (rank 0's)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from d2seg.cli.main import main
from d2seg.engine.launch import process_info
from d2seg.errors import D2SegError

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "tools" / "train.py"
CONFIG = REPO / "configs" / "instance" / "mask_rcnn_R18_GN_FPN_cpu_quick.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _env(datasets: Path | None = None) -> dict:
    env = dict(os.environ)
    # one thread per process in every run, so 1- and 2-process arithmetic is the same
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if datasets is not None:
        env["D2SEG_DATASETS"] = str(datasets)
    return env


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


# ------------------------------------------------------------------ process numbering

PROBE = """
import json, os, sys
from detectron2.utils import comm
def threads():
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
from d2seg.config import get_cfg
from d2seg.engine.launch import check_ready_to_train, init_from_env
init_from_env("cpu")
cfg = get_cfg()
cfg.MODEL.DEVICE, cfg.SOLVER.IMS_PER_BATCH = "cpu", 8
check_ready_to_train(cfg)  # detectron2's DistributedDataParallel set-up takes a CPU model
cfg.SOLVER.IMS_PER_BATCH = 6  # 4 processes cannot share 6 images evenly
try:
    check_ready_to_train(cfg)
    odd_batch = None
except Exception as e:
    odd_batch = f"{type(e).__name__}: {e}"
seen = dict(rank=comm.get_rank(), world=comm.get_world_size(), local_rank=comm.get_local_rank(),
            local_size=comm.get_local_size(), node=int(os.environ["GROUP_RANK"]),
            env_rank=int(os.environ["RANK"]), env_local_rank=int(os.environ["LOCAL_RANK"]))
# the per-machine group must be usable: sum the global ranks of this machine's processes
import torch, torch.distributed as dist
t = torch.tensor([comm.get_rank()])
dist.all_reduce(t, group=comm._LOCAL_PROCESS_GROUP)
seen["local_rank_sum"] = int(t)
seen["odd_batch"] = odd_batch
comm.all_gather({"rank": seen["rank"]})  # detectron2's gather: its cached gloo group
seen["threads_in_job"] = threads()
from d2seg.engine.launch import shutdown
comm.synchronize()
shutdown()
seen["threads_after_shutdown"] = threads()
seen["initialized_after_shutdown"] = dist.is_initialized()
open(os.path.join(sys.argv[1], f"rank{seen['rank']}.json"), "w").write(json.dumps(seen))
"""


@pytest.mark.slow
def test_torchrun_numbering_reaches_detectron2_comm(tmp_path):
    """Two 'machines' of two processes each: detectron2's rank, local rank and per-machine
    group agree with what torchrun put in each process's environment. shutdown() ends every
    gloo worker thread: one left running into interpreter exit aborted finished processes."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    port = str(_free_port())
    agents = [subprocess.Popen(
        _torchrun("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "2",
                  "--master-addr", "127.0.0.1", "--master-port", port, str(script), str(tmp_path)),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    for agent in agents:
        out, err = agent.communicate(timeout=120)
        assert agent.returncode == 0, out[-2000:] + err[-8000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    for s in seen:
        assert s["world"] == 4
        assert s["rank"] == s["env_rank"]
        assert s["local_size"] == 2
        assert s["local_rank"] == s["env_local_rank"]
    machines = {node: sorted(s["rank"] for s in seen if s["node"] == node) for node in (0, 1)}
    assert sorted(machines[0] + machines[1]) == [0, 1, 2, 3]
    for s in seen:
        assert s["local_rank_sum"] == sum(machines[s["node"]])
        assert s["odd_batch"].startswith("D2SegError: SOLVER.IMS_PER_BATCH: SOLVER.IMS_PER_BATCH 6")
        assert "does not split over 4 processes" in s["odd_batch"]
        gloo = [name for name in s["threads_in_job"] if "gloo" in name]
        assert gloo, s["threads_in_job"]  # so the check below is about the process groups' threads
        assert not [name for name in s["threads_after_shutdown"] if "gloo" in name], s
        assert not s["initialized_after_shutdown"]


def test_torchrun_environment_is_checked(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert process_info() is None
    env = dict(WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    info = process_info(env)
    got = (info.rank, info.world_size, info.local_rank, info.local_world_size, info.node_rank)
    assert got == (1, 2, 1, 2, 0)
    with pytest.raises(D2SegError, match="but RANK is not"):
        process_info({k: v for k, v in env.items() if k != "RANK"})
    with pytest.raises(D2SegError, match="inconsistent"):
        process_info({**env, "RANK": "2"})


def test_num_gpus_on_cpu_suggests_torchrun(monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    code = main(["train", "--config-file", str(CONFIG), "--num-gpus", "2", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "torchrun --nproc-per-node 2" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_num_gpus_job_survives_pickling():
    """--num-gpus hands the job and its arguments to detectron2's launch, which pickles them
    into each spawned process: they must arrive as the same function and the same values."""
    import pickle

    from d2seg.cli.main import build_parser
    from d2seg.cli.train import run_job
    from d2seg.engine import launch

    args = build_parser().parse_args(["train", "--config-file", str(CONFIG), "--num-gpus", "2",
                                      "SOLVER.MAX_ITER", "5"])
    wrapper, job, copy = pickle.loads(pickle.dumps((launch._run_reporting_user_errors, run_job, args)))
    assert wrapper is launch._run_reporting_user_errors and job is run_job
    assert vars(copy) == vars(args)


# ------------------------------------------------------------------ train and evaluate


def _write_split(root: Path, split: str, count: int, seed: int) -> None:
    """Images with one or two filled rectangles / ellipses of categories 3 and 7."""
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        h, w = 72, 88
        img = np.full((h, w, 3), 60, np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            cat = int(rng.choice([3, 7]))
            x0, y0 = int(rng.integers(2, w - 44)), int(rng.integers(2, h - 44))
            bw, bh = int(rng.integers(14, 42)), int(rng.integers(14, 42))  # COCO small and medium
            mask = np.zeros((h, w), np.uint8)
            if cat == 3:
                cv2.rectangle(mask, (x0, y0), (x0 + bw, y0 + bh), 1, -1)
                colour = (220, 40, 40)
            else:
                cv2.ellipse(mask, (x0 + bw // 2, y0 + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 1, -1)
                colour = (40, 200, 60)
            img[mask > 0] = colour
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            poly = contours[0].reshape(-1).astype(float).tolist()
            x, y, bw2, bh2 = cv2.boundingRect(mask)
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=cat,
                                    segmentation=[poly], bbox=[x, y, bw2, bh2],
                                    area=float(mask.sum()), iscrowd=0))
        name = f"{split}_{i}.png"
        cv2.imwrite(str(root / split / "images" / name), img)
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=3, name="box"), dict(id=7, name="blob")])
    (root / split / "instances.json").write_text(json.dumps(coco))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tinydist")
    _write_split(root, "train", 4, seed=1)
    _write_split(root, "val", 4, seed=2)
    (root / "tinydist.yaml").write_text(
        "name: tinydist\nkind: coco_instances\nsplits:\n"
        "  train: {images: train/images, annotations: train/instances.json}\n"
        "  val: {images: val/images, annotations: val/instances.json}\n")
    return root


OVERRIDES = [
    "DATASETS.TRAIN", "('tinydist_train',)", "DATASETS.TEST", "('tinydist_val',)",
    "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100000",
    "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(72,)",
    "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "72", "INPUT.MAX_SIZE_TEST", "96",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "D2SEG.PROGRESS_BAR", "False",
]


def _eval_files(folder: Path) -> tuple[dict, list]:
    results = json.loads((folder / "eval_results.json").read_text())
    predictions = json.loads((folder / "eval" / "tinydist_val" / "coco_instances_results.json").read_text())
    return results, predictions


def _same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _two_machines(tmp_path: Path, env: dict, args: list[str], timeout: int = 300) -> list[Path]:
    """Run tools/train.py as a job of 2 'machines' of one process each, each started from a
    folder of its own: with a relative --output, whatever a rank writes lands in its folder."""
    port = str(_free_port())
    folders = [tmp_path / "machine0", tmp_path / "machine1"]
    agents = []
    for node, cwd in enumerate(folders):
        cwd.mkdir(parents=True, exist_ok=True)  # existing folders: a later part of a job
        agents.append(subprocess.Popen(
            _torchrun("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                      "--master-addr", "127.0.0.1", "--master-port", port, str(TRAIN_PY), *args),
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for agent in agents:
        try:
            out, err = agent.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for a in agents:
                a.kill()
            raise
        assert agent.returncode == 0, out[-3000:] + err[-6000:]
    return folders


@pytest.mark.slow
def test_two_process_train_then_eval_matches_one_process(tiny_dataset, tmp_path):
    env = _env(tiny_dataset)
    common = ["--config-file", str(CONFIG)]

    # training on 2 'machines': only rank 0 writes checkpoints, logs, metrics, evaluations
    machine0, machine1 = _two_machines(tmp_path, env, [*common, "--output", "train", *OVERRIDES])
    assert list(machine1.iterdir()) == []
    train_dir = machine0 / "train"
    assert (train_dir / "model_final.pth").is_file()
    assert (train_dir / "last_checkpoint").read_text().strip() == "model_final.pth"
    log = (train_dir / "log.txt").read_text()
    assert "distributed run: 2 processes, gloo backend" in log
    names = sorted(p.name for p in train_dir.iterdir())
    assert not [n for n in names if "rank" in n], names  # no log.txt.rank1
    assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1, names
    iterations = [json.loads(line)["iteration"] for line in
                  (train_dir / "metrics.json").read_text().splitlines() if line.strip()]
    assert iterations and len(iterations) == len(set(iterations))
    weights = str(train_dir / "model_final.pth")

    # evaluation: 2 processes on this machine, then the reference: 1 plain process
    two_dir, one_dir = tmp_path / "two", tmp_path / "one"
    _check(subprocess.run(
        _torchrun("--nproc-per-node", "2", "--master-port", str(_free_port()), str(TRAIN_PY),
                  *common, "--eval-only", "--output", str(two_dir), *OVERRIDES, "MODEL.WEIGHTS", weights),
        env=env, capture_output=True, text=True, timeout=300))
    _check(subprocess.run(
        [sys.executable, str(TRAIN_PY), *common, "--eval-only", "--output", str(one_dir),
         *OVERRIDES, "MODEL.WEIGHTS", weights],
        env=env, capture_output=True, text=True, timeout=300))
    assert "distributed run: 2 processes, gloo backend" in (two_dir / "log.txt").read_text()
    assert not [p.name for p in two_dir.iterdir() if "rank" in p.name]
    two, two_predictions = _eval_files(two_dir)
    one, one_predictions = _eval_files(one_dir)

    # predictions of every image, including rank 1's share, reached rank 0
    val_ids = {im["id"] for im in json.loads((tiny_dataset / "val" / "instances.json").read_text())["images"]}
    assert {p["image_id"] for p in one_predictions} == val_ids
    assert {p["image_id"] for p in two_predictions} == val_ids
    assert two_predictions == one_predictions
    assert set(two) == set(one) == {"bbox", "segm"}
    for task in one:
        assert set(two[task]) == set(one[task])
        different = [k for k in one[task] if not _same_number(one[task][k], two[task][k])]
        assert not different, {k: (one[task][k], two[task][k]) for k in different}

    # d2seg eval under torchrun: the same predictions, and rank 0 alone writes the report
    # (rank 1 used to look for the results file only rank 0 writes, and fail)
    cli_dir = tmp_path / "cli"
    proc = subprocess.run(
        _torchrun("--nproc-per-node", "2", "--master-port", str(_free_port()), "-m",
                  "d2seg.cli.main", "eval", *common, "--out", str(cli_dir), "--no-plots",
                  *OVERRIDES, "MODEL.WEIGHTS", weights),
        env=env, capture_output=True, text=True, timeout=300)
    _check(proc)
    assert proc.stdout.count("written: ") == 1, proc.stdout[-3000:]
    _, cli_predictions = _eval_files(cli_dir)
    assert cli_predictions == one_predictions
    assert (cli_dir / "metrics.md").is_file()


@pytest.mark.slow
def test_resume_on_two_machines_when_only_rank_0_has_the_checkpoint(tiny_dataset, tmp_path):
    """Only rank 0 writes checkpoints, so machine 1's output folder is empty. --resume must
    still start every rank at rank 0's iteration with rank 0's weights; before d2seg sent the
    checkpoint over, rank 1 started at iteration 0 and the job hung, out of step."""
    env = _env(tiny_dataset)
    common = ["--config-file", str(CONFIG), "--output", "train", "--seed", "3", *OVERRIDES,
              "SOLVER.CHECKPOINT_PERIOD", "1"]
    machines = _two_machines(tmp_path, env, [*common, "SOLVER.MAX_ITER", "2"])
    assert list(machines[1].iterdir()) == []  # nothing on machine 1 to resume from
    _two_machines(tmp_path, env, [*common, "SOLVER.MAX_ITER", "4", "--resume"], timeout=150)
    train_dir = machines[0] / "train"
    assert "Starting training from iteration 2" in (train_dir / "log.txt").read_text()
    iterations = [json.loads(line)["iteration"] for line in
                  (train_dir / "metrics.json").read_text().splitlines() if line.strip()]
    # MAX_ITER reached: the last iteration (3) is logged, with the final evaluation run inside
    # it (d2seg.engine.hooks.EvalHook; detectron2's logged it after training, as iteration 4)
    assert iterations == sorted(set(iterations)) and iterations[-1] == 3
    assert list(machines[1].iterdir()) == []  # the received copy was not left behind
