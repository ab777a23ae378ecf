"""Running a peer tool in its own Python environment, for the benchmarks that compare with one.

The benchmark script runs itself there with a worker flag; requests and replies are JSON lines on
the worker's stdin and stdout (replies marked with ``tag``, so a library printing to stdout cannot
be mistaken for one), its stderr goes to ``work/worker.log``. Standard library only: the peer's
environment imports this file too.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

THREADS = 2


class PeerUnavailable(Exception):
    """The peer's environment is missing or cannot run the comparison."""


class PeerWorker:
    def __init__(self, python: Path, script: Path, flag: str, argument: str, work: Path, tag: str,
                 extra_env: dict[str, str] | None = None):
        env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
                   MKL_NUM_THREADS=str(THREADS), PYTHONNOUSERSITE="1", **(extra_env or {}))
        env.pop("PYTHONPATH", None)
        self.tag = tag
        self.log_path = work / "worker.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - the worker's stderr while it lives; closed in close()
        self.proc = subprocess.Popen([str(python), str(Path(script).resolve()), flag, argument],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     cwd=work, env=env)

    def last_log_line(self) -> str:
        self.log.flush()
        lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "(no output)"

    def receive(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise PeerUnavailable(f"the worker exited ({self.proc.returncode}): {self.last_log_line()}")
            if line.startswith(self.tag):
                reply = json.loads(line[len(self.tag):])
                if "error" in reply:
                    raise PeerUnavailable(reply["error"])
                return reply

    def request(self, message: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # receive() says why
        return self.receive()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def check_python(path: Path, modules: Sequence[str], install: str, create: str) -> None:
    """Raise PeerUnavailable unless ``path`` is a Python that finds ``modules`` (import lookup only, quick)."""
    if not path.is_file():
        raise PeerUnavailable(f"{path} not found; create the environment with: {create}")
    done = subprocess.run([str(path), "-c", "import importlib.util as u, sys; "
                           f"m = [p for p in {list(modules)!r} if not u.find_spec(p)]; "
                           "print(' '.join(m)); sys.exit(3 if m else 0)"],
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 3:
        raise PeerUnavailable(f"{path} lacks {done.stdout.strip()} ({install})")
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise PeerUnavailable(f"{path} does not run: {tail}")


# -- the worker's side ----------------------------------------------------------------------------

def reply_channel(tag: str) -> Callable[[dict], None]:
    """In the worker: a function sending one reply. Everything the worker's libraries print to stdout is
    sent to stderr (the log) from here on, so nothing else can be taken for a reply."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(obj: dict) -> None:
        replies.write(tag + json.dumps(obj) + "\n")
        replies.flush()

    return send


def error_reply(e: Exception) -> dict:
    """The reply of a worker that failed: the exception's type and last line (the traceback is in the log)."""
    text = str(e).strip()
    return {"error": f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"}
