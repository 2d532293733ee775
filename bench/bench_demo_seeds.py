"""Seed sweep of the two demo trainings (`d2seg demo`): does every run finish, and how much do
segm AP and PQ move with the seed and the thread count?

Each run is what `d2seg demo` does for one model (d2seg.runners.demo.run_instance_demo /
run_panoptic_demo: the demo configs' full schedule, 360 iterations, then evaluation on val),
with ``seed=S`` and ``torch.set_num_threads(T)``, in its own process. A run that stops (a
diverged loss is a D2SegError) is recorded as not finished with its one-line error. Per run:
bbox and segm AP (demo_instances_val; for the panoptic model detectron2's COCOEvaluator on
demo_panoptic_val during training), PQ / SQ / RQ (panoptic), seconds, and the largest
per-parameter gradient norm seen before clipping (``--grad-stats``; the evidence for
SOLVER.CLIP_GRADIENTS.CLIP_VALUE).

At most ``--jobs`` runs at once (default 2) and never more threads than cores: runs with 2
threads go one at a time on a 2-core machine.

    python bench/bench_demo_seeds.py [--seeds 42 1 2 3 4 5] [--threads 1 2]
        [--models instance panoptic] [--jobs 2] [--work runs/bench_demo_seeds]
        [--report bench/results/demo_seeds] [--grad-stats] [--set KEY VALUE ...]
    python bench/bench_demo_seeds.py --collect --work DIR   # the report from finished runs

``--set`` adds config overrides to both models (to compare recipes); the report names them.
Writes <report>.json (every run) and <report>.md (min / median / max per model and threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# -- one run (in a child process) --------------------------------------------------------------

def _install_grad_stats(record: list) -> None:
    """Record, before each optimizer step (before clipping), the largest per-parameter gradient
    norm, the parameter it belongs to and the total norm."""
    from d2seg.engine.trainer import Trainer

    build = Trainer.build_optimizer

    def build_optimizer(cfg, model):
        optimizer = build(cfg, model)
        names = {id(p): n for n, p in model.named_parameters()}
        step = optimizer.step

        def recorded_step(self, *args, **kwargs):  # a bound method: torch's LR scheduler wraps it
            norms = [(float(p.grad.detach().norm()), names.get(id(p), "?"))
                     for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            top, name = max(norms) if norms else (0.0, "")
            total = sum(n * n for n, _ in norms) ** 0.5
            record.append({"max": top, "param": name, "total": total})
            return step(*args, **kwargs)

        optimizer.step = types.MethodType(recorded_step, optimizer)
        return optimizer

    Trainer.build_optimizer = staticmethod(build_optimizer)


def _one(model: str, seed: int, threads: int, out: Path, overrides: list[str],
         grad_stats: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    from d2seg.runners import demo
    from d2seg.engine import run as engine

    if overrides:
        setup = engine.setup

        def setup_with_overrides(config_file=None, extra=(), **kwargs):
            return setup(config_file, list(extra) + overrides, **kwargs)

        engine.setup = setup_with_overrides
    grads: list = []
    if grad_stats:
        _install_grad_stats(grads)
    result = {"model": model, "seed": seed, "threads": threads, "overrides": overrides}
    start = time.time()
    try:
        fn = demo.run_instance_demo if model == "instance" else demo.run_panoptic_demo
        metrics = fn(str(out), seed=seed, num_pictures=0)["metrics"]
        result.update(finished=True, metrics=metrics)
    except Exception as e:  # noqa: BLE001  (a diverged run is data here)
        one_line = getattr(e, "one_line", None)
        result.update(finished=False, error=one_line() if one_line else f"{type(e).__name__}: {e}")
    result["seconds"] = round(time.time() - start, 1)
    folder = out / model
    evals = folder / "eval_results.json"
    if evals.is_file():
        ev = json.loads(evals.read_text())
        result["coco"] = {task: {k: ev[task][k] for k in ("AP", "AP50") if k in ev[task]}
                          for task in ("bbox", "segm") if task in ev}
    if grads:
        top = max(grads, key=lambda g: g["max"] if g["max"] == g["max"] else float("inf"))
        finite = sorted(g["max"] for g in grads if g["max"] < float("inf"))
        result["grad"] = {"iterations": len(grads), "max_param_norm": top["max"],
                          "max_param": top["param"],
                          "median_max_param_norm": finite[len(finite) // 2] if finite else None,
                          "p99_max_param_norm": finite[int(len(finite) * 0.99)] if finite else None}
        (folder / "grad_stats.json").write_text(json.dumps(grads))
    return result


# -- the sweep ---------------------------------------------------------------------------------

def _launch(model, seed, threads, work: Path, overrides, grad_stats) -> dict:
    out = work / f"{model}_s{seed}_t{threads}"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, __file__, "--_one", model, str(seed), str(threads), str(out),
           *(["--grad-stats"] if grad_stats else []), "--set", *overrides]
    with open(out / "run.log", "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    path = out / "result.json"
    if path.is_file():
        result = json.loads(path.read_text())
    else:  # the child itself crashed
        result = {"model": model, "seed": seed, "threads": threads, "overrides": overrides,
                  "finished": False, "error": f"process exited {rc} (see {out / 'run.log'})"}
    print(f"{model} seed {seed} threads {threads}: " + (
        f"finished in {result.get('seconds')} s, {_headline(result)}" if result["finished"]
        else f"NOT finished: {result['error']}"), flush=True)
    return result


def _headline(r: dict) -> str:
    parts = []
    for name, value in (("segm AP", _segm(r)), ("bbox AP", _bbox(r)), ("PQ", _pq(r))):
        if value is not None:
            parts.append(f"{name} {value:.1f}")
    return ", ".join(parts)


def _segm(r):
    if r.get("model") == "instance" and r.get("finished"):
        return 100 * r["metrics"]["segm"]["AP"]
    return (r.get("coco") or {}).get("segm", {}).get("AP") if r.get("finished") else None


def _bbox(r):
    if r.get("model") == "instance" and r.get("finished"):
        return 100 * r["metrics"]["bbox"]["AP"]
    return (r.get("coco") or {}).get("bbox", {}).get("AP") if r.get("finished") else None


def _pq(r):
    return 100 * r["metrics"]["All"]["pq"] if r.get("finished") and r["model"] == "panoptic" else None


def _more(r: dict) -> str:
    """The README's other figures: segm AP50 / AP75, or SQ, RQ, things / stuff PQ."""
    if not r.get("finished"):
        return "-"
    m = r["metrics"]
    if r["model"] == "instance":
        return f"segm AP50 {100 * m['segm']['AP50']:.1f}, AP75 {100 * m['segm']['AP75']:.1f}"
    return (f"SQ {100 * m['All']['sq']:.1f}, RQ {100 * m['All']['rq']:.1f}, things PQ "
            f"{100 * m['Things']['pq']:.1f}, stuff PQ {100 * m['Stuff']['pq']:.1f}")


def _spread(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def markdown(results: list[dict], command: str) -> str:
    lines = [f"Command: `{command}`", "",
             "| model | torch threads | seeds | finished | segm AP min / median / max "
             "| bbox AP min / median / max | PQ min / median / max | s per run (median) "
             "| largest per-param grad norm |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in results:
        groups.setdefault((r["model"], r["threads"]), []).append(r)
    for (model, threads), runs in sorted(groups.items()):
        done = [r for r in runs if r["finished"]]
        seconds = [r["seconds"] for r in done if "seconds" in r]
        grads = [r["grad"]["max_param_norm"] for r in runs if r.get("grad")]
        seconds_cell = f"{statistics.median(seconds):.0f}" if seconds else "-"
        grad_cell = f"{max(grads):.3g}" if grads else "-"
        lines.append(
            f"| {model} | {threads} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {len(done)}/{len(runs)} | {_spread(_segm(r) for r in done)} "
            f"| {_spread(_bbox(r) for r in done)} "
            f"| {_spread(_pq(r) for r in done) if model == 'panoptic' else '-'} "
            f"| {seconds_cell} | {grad_cell} |")
    failed = [r for r in results if not r["finished"]]
    if failed:
        lines += ["", "Runs that did not finish:"]
        lines += [f"- {r['model']} seed {r['seed']} threads {r['threads']}: {r['error']}"
                  for r in failed]
    lines += ["", "Per run:", "", "| model | threads | seed | finished | segm AP | bbox AP | PQ | more |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["model"], r["threads"], r["seed"])):
        cells = [_segm(r), _bbox(r), _pq(r)]
        lines.append(f"| {r['model']} | {r['threads']} | {r['seed']} | {'yes' if r['finished'] else 'no'} | "
                     + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + f" | {_more(r)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4, 5])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--models", nargs="+", choices=["instance", "panoptic"],
                   default=["instance", "panoptic"])
    p.add_argument("--jobs", type=int, default=2, help="runs at once (never more threads than cores)")
    p.add_argument("--work", default=str(REPO / "runs" / "bench_demo_seeds"))
    p.add_argument("--report", default=str(REPO / "bench" / "results" / "demo_seeds"))
    p.add_argument("--append", action="store_true",
                   help="add to the report's runs (a run of the same model, seed and threads is replaced)")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: write the report from the runs already in --work")
    p.add_argument("--grad-stats", action="store_true")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY VALUE")
    p.add_argument("--_one", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.set) % 2:
        p.error("--set takes KEY VALUE pairs")
    if args._one:
        model, seed, threads, out = args._one
        result = _one(model, int(seed), int(threads), Path(out), args.set, args.grad_stats)
        (Path(out) / "result.json").write_text(json.dumps(result, indent=1, default=float))
        return 0

    command = "python bench/bench_demo_seeds.py " + " ".join(sys.argv[1:])
    work = Path(args.work)
    if args.collect:
        found = [json.loads(f.read_text()) for f in sorted(work.glob("*/result.json"))]
        _write(args.report, found, command)
        print(markdown(found, command))
        return 0 if all(r["finished"] for r in found) else 1
    cores = os.cpu_count() or 1
    results, earlier = [], []
    previous = Path(args.report).with_suffix(".json")
    if args.append and previous.is_file():
        data = json.loads(previous.read_text())
        earlier, command = data["runs"], data["command"] + "` then `" + command
    for threads in args.threads:
        jobs = max(1, min(args.jobs, cores // threads))
        runs = [(m, s) for s in args.seeds for m in args.models]
        with ThreadPoolExecutor(jobs) as pool:
            results += list(pool.map(
                lambda ms: _launch(ms[0], ms[1], threads, work, args.set, args.grad_stats), runs))
        new = {(r["model"], r["seed"], r["threads"]) for r in results}
        kept = [r for r in earlier if (r["model"], r["seed"], r["threads"]) not in new]
        _write(args.report, kept + results, command)  # partial reports survive a long sweep's end
    print(markdown(kept + results, command))
    return 0 if all(r["finished"] for r in results) else 1


def _write(report: str, results: list[dict], command: str) -> None:
    path = Path(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(
        {"command": command, "runs": results}, indent=1, default=float))
    path.with_suffix(".md").write_text(markdown(results, command))


if __name__ == "__main__":
    sys.exit(main())
