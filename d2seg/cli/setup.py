"""``d2seg setup``: install detectron2 (no compiler) if it is missing."""

from __future__ import annotations

from d2seg.errors import D2SegError


def add_parser(sub) -> None:
    p = sub.add_parser("setup", help="install detectron2 v0.6 without a C++ build (idempotent)")
    p.add_argument("--force", action="store_true", help="reinstall d2seg's detectron2 build")
    p.set_defaults(run=run)


def run(args) -> int:
    from d2seg.compat import installer

    try:
        print(installer.install(force=args.force))
    except installer.InstallError as e:
        raise D2SegError(str(e)) from None
    return 0
