"""`python -m nsgan.cli.page OUT`: rebuild OUT/index.html from the outputs of nsgan score or nsgan evaluate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nsgan.common.errors import EXIT_DATA, NsganError, OutputError, printable
from nsgan.evaluate.page import write_evaluate_page
from nsgan.share.html_page import check_page, write_score_page


def main(argv: list[str] | None = None) -> int:
    """`python -m nsgan.cli.page OUT`: rebuild OUT/index.html (an evaluate folder when it holds metrics.json)."""
    p = argparse.ArgumentParser(prog="python -m nsgan.cli.page", description=main.__doc__.splitlines()[0])
    p.add_argument("out", help="an output folder of nsgan score or nsgan evaluate")
    p.add_argument("--overwrite", action="store_true", help="replace an index.html that nsgan did not write")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if not out.is_dir():
            raise OutputError(f"{out}: no such folder")
        check_page(out, args.overwrite)
        if (out / "metrics.json").is_file() and (out / "scores.csv").is_file():
            page = write_evaluate_page(out)
        else:
            page = write_score_page(out)
            if page is None:
                raise OutputError(f"{out}: holds no report of nsgan score (<name>.json) nor an evaluate's metrics.json")
    except NsganError as err:
        print(f"nsgan html_report: error: {printable(str(err))}", file=sys.stderr)
        return err.exit_code
    except (OSError, ValueError) as exc:  # an unreadable metrics.json or scores.csv
        print(f"nsgan html_report: error: {printable(str(out))}: cannot read its outputs ({exc})", file=sys.stderr)
        return EXIT_DATA
    print(f"wrote {printable(str(page))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
