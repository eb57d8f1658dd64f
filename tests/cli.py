"""``python -m roadmap.train``'s ``main()`` run in the test's own process: its exit code and
what it wrote to stderr, without the seconds a new process spends importing torch. One test
per entry point still runs the real command in a new process."""

import contextlib
import io
import sys

from roadmap.train.__main__ import main


def run_main(*args: str) -> tuple[int, str]:
    """(exit code, stderr) of ``python -m roadmap.train *args``, run in this process."""
    argv, err, code = sys.argv, io.StringIO(), 0
    sys.argv = ["roadmap.train", *args]
    try:
        with contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()
