"""``nas-aug``: run recipes and list the search spaces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from .recipe import Recipe, run_recipe

    recipe = Recipe.from_yaml(args.recipe, args.set)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    run_recipe(recipe, out, overwrite=args.overwrite)
    print(f"export, report and results in {out}/")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .formats import FORMATS, export_format

    for fmt in args.format:  # every name checked before any is written
        FORMATS.get(fmt)
    for fmt in args.format:
        path, difference = export_format(args.directory, fmt)
        print(f"{path}  (max |difference| to the PyTorch sub-network: {difference:.2e})")
    return 0


def _spaces(args: argparse.Namespace) -> int:
    from .search_spaces import create_space, list_spaces
    from .supernet import space_of

    names = list_spaces(args.pattern)
    if not names:
        print(f"no space matches {args.pattern!r}", file=sys.stderr)
        return 1
    for name in names:
        space = space_of(create_space(name))
        print(f"{name:24s} {len(space.labels):3d} labels  {space.size:.3g} samples")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas-aug", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a recipe end to end")
    run.add_argument("recipe", help="path to a recipe YAML file")
    run.add_argument("--out", help="output directory (default: runs/<recipe name>)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a result already in the output directory")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a recipe value, e.g. --set supernet.epochs=5")
    run.set_defaults(func=_run)
    export = commands.add_parser("export", help="write an exported sub-network in other formats")
    export.add_argument("directory", help="a directory holding architecture.json")
    export.add_argument("--format", nargs="+", required=True,
                        help="torchscript, onnx (checked with onnxruntime), pt2 (torch.export) "
                             "or timm (timm.json: timm's definition of a timm sub-network)")
    export.set_defaults(func=_export)
    spaces = commands.add_parser("spaces", help="list the registered search spaces")
    spaces.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    spaces.set_defaults(func=_spaces)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, ImportError, RuntimeError) as err:
        print(f"nas-aug: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
