"""``nas-aug``: run recipes, list the bundled recipes and the search spaces."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata, resources
from pathlib import Path

import yaml

from .validation import closest_match


def bundled_recipes() -> dict[str, Path]:
    """The recipes shipped as package data (``nas_aug.recipes``): name -> YAML file."""
    folder = Path(str(resources.files("nas_aug.recipes")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def find_recipe(value: str) -> Path:
    """The recipe file ``value`` names: an existing file, else a bundled recipe's name (or
    ``recipes/<name>.yaml``, as the README writes it, run outside the repository)."""
    path = Path(value)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    name = path.stem if path.parts == ("recipes", f"{path.stem}.yaml") else value
    if name in bundled:
        return bundled[name]
    raise FileNotFoundError(f"{value!r} is neither a recipe file nor a bundled recipe"
                            f"{closest_match(path.stem, bundled)}; the bundled recipes are "
                            f"{', '.join(bundled)}")


def _run(args: argparse.Namespace) -> int:
    from .recipe import Recipe, run_recipe

    recipe = Recipe.from_yaml(find_recipe(args.recipe), args.set)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    run_recipe(recipe, out, overwrite=args.overwrite, quiet=args.quiet, resume=args.resume)
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


def _show(args: argparse.Namespace) -> int:
    from .export import build_subnet, load_architecture
    from .report import architecture_summary, supernet_name
    from .search_spaces import create_space

    arch = load_architecture(args.directory)
    score = "-" if arch.score is None else f"{arch.score:.4f}"
    print(f"{supernet_name(arch)}, searched by {arch.strategy}: held-out {arch.metric} {score}")
    try:
        subnet = build_subnet(arch, weights=False)
    except ValueError as err:
        if arch.space is not None:
            raise
        # a supernet of no registered space (an NNI space, a custom one): its own code
        # builds the sub-network, so the choices are all there is to show
        width = max(map(len, arch.sample), default=0)
        for label, value in arch.sample.items():
            print(f"  {label:{width}}  {value}")
        print(f"{arch.macs:,} MACs, {arch.params:,} params (as the search counted them); no "
              f"table of stages: {_one_line(err)}")
        return 0
    supernet = None if arch.space is None else create_space(arch.space, **arch.space_kwargs)
    print(architecture_summary(subnet, arch.sample, arch.input_shape, supernet,
                               counter=args.counter))
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


def _recipes(args: argparse.Namespace) -> int:
    from .recipe import Recipe, TrainerConfig, training_cost

    rows = [("recipe", "data", "cost", "device")]
    for name, path in bundled_recipes().items():
        recipe = Recipe.from_yaml(path)
        trainer = recipe.trainer
        device = f"{trainer.accelerator}, devices={trainer.devices}, {trainer.precision}"
        if trainer.strategy != TrainerConfig.strategy:
            device += f", {trainer.strategy}"
        rows.append((name, recipe.data.name, training_cost(recipe), device))
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    for row in rows:
        print("  ".join(f"{cell:{width}}" for cell, width in zip(row, widths)).rstrip())
    return 0


def _version() -> str:
    try:
        return metadata.version("nas_aug")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas-aug", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run a recipe end to end")
    run.add_argument("recipe", help="a recipe YAML file, or a bundled recipe's name "
                                    "(nas-aug recipes lists them)")
    run.add_argument("--out", help="output directory (default: runs/<recipe name>)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a result already in the output directory")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in the output directory from its checkpoints "
                          "(with the same recipe and --set values)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a recipe value, e.g. --set supernet.epochs=5")
    run.add_argument("--quiet", action="store_true",
                     help="no progress bars and no Lightning info logs (warnings, errors and "
                          "the results still show)")
    run.set_defaults(func=_run)
    recipes = commands.add_parser("recipes", help="list the bundled recipes")
    recipes.set_defaults(func=_recipes)
    export = commands.add_parser("export", help="write an exported sub-network in other formats")
    export.add_argument("directory", help="a directory holding architecture.json")
    export.add_argument("--format", nargs="+", required=True,
                        help="torchscript, onnx (checked with onnxruntime), pt2 (torch.export) "
                             "or timm (timm.json: timm's definition of a timm sub-network)")
    export.set_defaults(func=_export)
    show = commands.add_parser("show", help="print an exported architecture as a table: "
                                            "stages, choices, MACs and parameters")
    show.add_argument("directory", help="a directory holding architecture.json")
    show.add_argument("--counter", default="fvcore",
                      help="the MAC counter: fvcore (the default, as searches count) or torch")
    show.set_defaults(func=_show)
    spaces = commands.add_parser("spaces", help="list the registered search spaces")
    spaces.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    spaces.set_defaults(func=_spaces)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """What a user's input causes: bad values and YAML, files and permissions, a missing
    optional dependency, a device the machine lacks. Anything else is a bug: its traceback
    shows."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    return (ValueError, OSError, ImportError, RuntimeError, yaml.YAMLError,
            MisconfigurationException)


def _one_line(err: Exception) -> str:
    """``err``'s message on one line, in the command line's words."""
    message = str(err)
    for python, flag in (("overwrite=True", "--overwrite"), ("resume=True", "--resume")):
        message = message.replace(python, flag)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"nas-aug: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
