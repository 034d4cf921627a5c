"""Command-line entry point of netsody-sp."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("netsody-sp: not implemented yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
