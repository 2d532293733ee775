"""Entry point of the ``d2seg`` command; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
import warnings

from d2seg.errors import D2SegError



def subcommand_modules():
    """Every module in d2seg.cli with an ``add_parser(subparsers)`` function, by name."""
    import d2seg.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name != "main":
            module = importlib.import_module(f"d2seg.cli.{info.name}")
            if hasattr(module, "add_parser"):
                yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="d2seg",
        description="Instance, semantic and panoptic segmentation on your own data (detectron2).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in subcommand_modules():
        module.add_parser(sub)
    return parser


def _hide_upstream_deprecations() -> None:
    """detectron2 v0.6 on torch 2.x warns about APIs it uses; users can do nothing about them."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release")
    warnings.filterwarnings("ignore", message=r"The 'warn' method is deprecated")
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        _hide_upstream_deprecations()
    try:
        return int(args.run(args) or 0)
    except D2SegError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
