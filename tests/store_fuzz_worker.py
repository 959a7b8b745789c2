"""Runs `curindex` commands for test_store_fuzz.py, many per process: one JSON line on stdin
per case (``{"ops": [argv, ...]}``), one JSON line on stdout per case with each command's exit
code and the end of what it wrote on stderr. A command that raises out of the CLI (a bug: the
CLI re-raises anything that is not a curindex error) is reported with its traceback, code
"uncaught". A crash ends the process, which the test sees by its exit status.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def run(argv: list[str]) -> dict:
    from curindex.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code: int | str = main(argv)
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
        except BaseException:
            code, text = "uncaught", traceback.format_exc()
            return {"argv": argv, "code": code, "err": text[-3000:]}
    return {"argv": argv, "code": code, "err": err.getvalue()[-1500:]}


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # the CLI's own warnings are not what is checked
    reply = sys.stdout
    for line in sys.stdin:
        case = json.loads(line)
        reply.write(json.dumps([run(argv) for argv in case["ops"]]) + "\n")
        reply.flush()


if __name__ == "__main__":
    main()
