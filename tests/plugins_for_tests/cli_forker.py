"""Runs ``tlapp`` commands as forked children of one process that has imported tlcore once.

Each child is a real process running the CLI's ``main`` (what ``python -m tlcore`` runs), so a test can
kill it with any signal; forking spares it the seconds of importing torch, torchvision and torchmetrics
that a fresh interpreter pays. The forker imports only the core (its built-ins included), never a test
plugin, and runs no torch operation, so every child loads its plugins and starts its thread pools afresh.

Protocol, one JSON object per line: the test writes ``{"args", "cwd", "env", "output"}``; the forker
answers ``{"pid"}`` once the child runs and ``{"exit"}`` when it ends (negative: killed by that signal).
The child's stdout and stderr go to the files ``output + ".out"`` and ``output + ".err"``.
"""

from __future__ import annotations

import json
import os
import sys

import tlcore.builtins  # noqa: F401  (imported here, once, for every child: torchmetrics and torchvision)
import tlcore.cli
import tlcore.run  # noqa: F401

# Variables the tests set per command; a child sees only the ones its request names.
PER_COMMAND = ("TLAPP_TEST_", "TLAPP_TOY_")


def child(request: dict) -> None:
    code = 1
    try:
        os.chdir(request["cwd"])
        for name in [n for n in os.environ if n.startswith(PER_COMMAND)]:
            del os.environ[name]
        os.environ.update(request["env"])
        for fd, suffix in ((1, ".out"), (2, ".err")):
            target = os.open(request["output"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        try:
            tlcore.cli.main(request["args"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
