"""Generate the sample slides: ``python sample_data/generate.py [--large] [OUT]``.

A thin wrapper over :func:`slideserver.samples.write_samples` (``slideserver sample OUT`` does the
same). Slides already present and valid are kept; OUT defaults to ``sample_data/generated``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a fresh clone without installing

from slideserver.samples import write_samples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "out", nargs="?", type=Path, default=HERE / "generated", help="output folder"
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="also write the 40960 x 30720 SVS (about a minute, ~0.5 GB)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    for name, path in write_samples(args.out, large=args.large).items():
        print(f"{name}\t{path}")
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
