"""gritkit base: import a pretrained GGUF model (a named base or any file) as a GRIT model directory."""

from __future__ import annotations

NAME = "base"
HELP = "import a pretrained base model from a GGUF file into a Hugging Face directory gritkit loads"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="base_command", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="dequantise a named base or a .gguf file into --out")
    imp.add_argument("source", help="a named base (see `gritkit base list`) or a path to a .gguf file")
    imp.add_argument("--out", required=True, help="directory to write the model to")
    imp.add_argument("--license", default=None, help="licence to record (default: the file's general.license)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing model at --out")
    sub.add_parser("list", help="the named bases and whether their package is installed")


def run(args) -> int:
    from ..weights.bases import BASES, BaseNotInstalled, find_base_gguf, import_base, import_gguf

    if args.base_command == "list":
        for name, base in BASES.items():
            try:
                where = str(find_base_gguf(name))
            except BaseNotInstalled:
                where = f"not installed: {base.install_command}"
            print(f"{name}  ({base.license})  {where}")
        return 0
    if args.source in BASES or not args.source.endswith(".gguf"):
        import_base(args.source, args.out, overwrite=args.overwrite)
    else:
        import_gguf(args.source, args.out, license=args.license, overwrite=args.overwrite)
    return 0
