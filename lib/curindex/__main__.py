"""``python -m curindex ...``: the `curindex` command."""

import sys

from curindex.cli import main

if __name__ == "__main__":
    sys.exit(main())
