"""`python -m tools.protocols NAME --out DIR [options]`: build one protocol's category folder."""

from __future__ import annotations

import argparse
import importlib
import sys

from nsgan import EXIT_OK, NsganError

from . import BUILDERS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.protocols", description=__doc__)
    sub = parser.add_subparsers(dest="protocol", required=True)
    for name in BUILDERS:
        module = importlib.import_module(f"{__package__}.{name}")
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    try:
        protocol = args._run(args)
    except NsganError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    counts = ", ".join(f"{k}: {v}" for k, v in protocol["counts"].items())
    print(f"wrote {args.out} ({counts})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
