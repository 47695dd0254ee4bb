"""The poolscope-exporter binary as a child process on 127.0.0.1.

It listens on a kernel-chosen port, read back from its "Listening on" log
line; its output goes to a file; it stops on a signal. Every wait is bounded.
Used by stack.py (scripts/run) and by the exporter's process-level tests.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import loopback

# Bounds on waiting; generous because the machine's two cores are shared.
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")


class Exporter:
    """One poolscope-exporter child process; its stdout and stderr go to a file."""

    def __init__(self, binary, database_url, args=(), env=None, workdir=None, own_session=False):
        """own_session: in a session of its own and killed with this process,
        so a terminal's Ctrl-C or a crashed caller cannot leave it behind or
        stop it out of order."""
        self.owns_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="poolscope-exporter.")
        os.makedirs(self.workdir, exist_ok=True)
        self.log_path = os.path.join(self.workdir, "exporter.log")
        self.log = open(self.log_path, "w+b")
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith("POOL_") and k not in ("DATABASE_URL", "LOG_LEVEL",
                                                                   "LOG_FORMAT")}
        environment["DATABASE_URL"] = database_url
        environment.update(env or {})
        command = [binary, "--web.listen-address=127.0.0.1:0", *args]
        self.process = subprocess.Popen(
            loopback.die_with_parent(command) if own_session else command,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=environment,
            start_new_session=own_session)
        self.port = None
        self.returncode = None

    def output(self):
        self.log.flush()
        with open(self.log_path, "rb") as log:
            return log.read()

    def wait_listening(self):
        def bound_port():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"exporter exited with {self.process.returncode}:\n{self.output().decode(errors='replace')}")
            match = LISTENING.search(self.output())
            return int(match.group(1)) if match else None
        self.port = loopback.poll(bound_port, START_TIMEOUT_S, what="the exporter to listen")
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` (unless the process has ended) and returns the exit code. A
        second SIGINT makes the exporter skip its graceful shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"exporter did not stop after {sig.name}:\n"
                                 f"{self.output().decode(errors='replace')}")
        return self.returncode

    def wait_exit(self):
        """Waits (bounded) for the process to end by itself; returns the exit code."""
        try:
            self.returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"exporter did not exit:\n{self.output().decode(errors='replace')}")
        return self.returncode

    def __enter__(self):
        return self.wait_listening()

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if exc and exc[0] is not None:
            # The test failed with the exporter running: show what it said.
            sys.stderr.write(self.output().decode(errors="replace")[-20000:])
        self.log.close()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
