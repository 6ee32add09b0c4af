"""``napari-medseg`` command line: thin argparse front ends over the same API the widgets use.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func`` takes the parsed args and returns an exit code. Errors the package raises on purpose
(:class:`~napari_medseg.core.errors.MedsegError`) and ordinary OS errors are printed as one line,
``napari-medseg: error: <file>: <problem>``, with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from napari_medseg import __version__
from napari_medseg.core.errors import MedsegError

# subcommand modules, in the order `--help` lists them
SUBCOMMANDS = ("info", "convert", "segment", "models", "evaluate", "phantom", "train")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="napari-medseg",
        description="Medical volume segmentation: read scans with exact geometry, segment, save labels.",
    )
    parser.add_argument("--version", action="version", version=f"napari-medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"napari_medseg.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"napari_medseg.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MedsegError as exc:
        print(f"napari-medseg: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"napari-medseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-medseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
