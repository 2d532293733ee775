"""``d2seg doctor``: versions, device, detectron2's operators and a short self-check."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check the installation (versions, device, a self-check)")
    p.add_argument("--no-self-check", action="store_true", help="only report versions")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.runners import diagnostics

    found = diagnostics.versions()
    width = max(map(len, [*found, "detectron2 ops", "panoptic PNGs", "export backends"])) + 2
    for name, version in found.items():
        print(f"{name:<{width}}{version}")
    print(f"{'versions':<{width}}{diagnostics.lock_status()}")
    backends = diagnostics.deploy_backends()
    print(f"{'export backends':<{width}}"
          + "; ".join(f"{name}: {state}" for name, state in backends.items()))
    missing = [n for n, v in found.items() if v == "missing"]
    if "torch" in missing:
        print("error: torch is not installed; run `make demo` or `pip install torch torchvision`")
        return 1
    print(f"{'device':<{width}}{diagnostics.device()}")
    ops = diagnostics.detectron2_ops()
    print(f"{'detectron2 ops':<{width}}{ops}")
    print(f"{'panoptic PNGs':<{width}}{diagnostics.png_decoder()}")
    if "detectron2" in missing or ops.startswith("missing"):
        print("error: detectron2 is not usable; run `d2seg setup` to install it (no compiler needed)")
        return 1
    if args.no_self_check:
        return 0
    failed = False
    for check in diagnostics.self_check():
        status = "ok  " if check.ok else "FAIL"
        print(f"self-check {status} {check.name} ({check.seconds:.1f}s): {check.detail}")
        failed |= not check.ok
    if failed:
        print("error: the self-check failed; run `d2seg --debug doctor` and report the line above")
        return 1
    print("d2seg is ready")
    return 0
