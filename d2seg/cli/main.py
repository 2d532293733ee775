"""Entry point of the ``d2seg`` command; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys
import traceback

from d2seg.errors import D2SegError

SUBCOMMANDS = ("doctor", "setup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="d2seg",
        description="Instance, semantic and panoptic segmentation on your own data (detectron2).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = __import__(f"d2seg.cli.{name}", fromlist=["add_parser"])
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
