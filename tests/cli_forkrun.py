"""Run many CLI invocations as real child processes, cheaply: import the CLIs once, then fork one child per
case (its own stdin/stdout/stderr files, exit code and uncaught-exception traceback, as a console script).

usage: python cli_forkrun.py CASES.json RESULTS.json   (cases: [[name, "wfn"|"wfn-sim", [args...]], ...])
"""
import json
import os
import sys
import tempfile
import traceback

from wfn_kernels.workflows.cli import main as wfn_main  # noqa: E402  (imports torch and the package once)
from wfn_sim.cli import main as sim_main  # noqa: E402

MAINS = {"wfn": wfn_main, "wfn-sim": sim_main}


def run_case(prog, args):
    out = tempfile.TemporaryFile(mode="w+")
    err = tempfile.TemporaryFile(mode="w+")
    pid = os.fork()
    if pid == 0:  # child: behave as `prog args...` would
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.argv = [prog, *args]
        try:
            code = MAINS[prog](args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (print(exc.code, file=sys.stderr) or 1)
        except BaseException:  # noqa: BLE001  (what the interpreter does with an uncaught exception)
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return {"returncode": os.waitstatus_to_exitcode(status), "stdout": out.read(), "stderr": err.read()}


if __name__ == "__main__":
    cases = json.load(open(sys.argv[1]))
    json.dump({name: run_case(prog, args) for name, prog, args in cases}, open(sys.argv[2], "w"))
