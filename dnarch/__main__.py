"""``python -m dnarch`` and the ``dnarch`` command: a Ctrl-C while the libraries load (seconds) ends
with one line and exit code 130, like one during a run, not a traceback."""

import sys


def main() -> int:
    try:
        from dnarch.cli import main as cli_main
    except KeyboardInterrupt:
        print("dnarch: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
