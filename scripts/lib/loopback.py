"""Child processes, HTTP and Prometheus-style servers on 127.0.0.1.

Standard library only, so any script can import it: stack.py (which scripts/run
starts) builds the whole monitoring stack on it, and the test and benchmark
scripts use it for their ports, requests and waits. Scripts outside
scripts/lib put this folder on sys.path first.

  free_port()            a port that was free on 127.0.0.1 a moment ago
  http_request, http_get one request (never through a proxy); HTTP error
                         statuses come back as a Response, not raised
  wait_until, poll       a bounded wait for a predicate (poll raises on timeout)
  spawn(command, log)    a child in its own session, killed with this process
  stop_processes(ps)     SIGTERM to all, SIGKILL to whatever outlives the grace
  log_tail, log_errors   why a server did not start, from its log
  Startable              start() on `with`, stop() on leaving it (or when start fails)
  Server                 a server on a free port, retried when the port was
                         taken in the meantime, ready once /-/ready answers 200
  ensure_npm_packages    `npm ci` in a folder with a package-lock.json, once
"""

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence

# Bounds on waiting. Generous: the machine's two cores are shared.
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 45
START_ATTEMPTS = 3  # a free port can be taken between probing and binding


class ServerError(RuntimeError):
    """Something a server needs is missing or a process failed to start."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_npm_packages(folder: str, package: str, timeout_s: float = 600) -> None:
    """Installs folder's pinned npm packages (`npm ci`) unless `package` is there.

    Serialised with a lock file, so tests running in parallel install once.
    """
    marker = os.path.join(folder, "node_modules", package, "package.json")
    if os.path.exists(marker):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ServerError("npm not found: install Node.js (scripts/setup does)")
    with open(os.path.join(folder, ".npm-install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(marker):
            print(f"installing the pinned npm packages of {folder} with npm ci", flush=True)
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, check=True,
                           stdout=subprocess.DEVNULL, timeout=timeout_s)


def die_with_parent(command: Sequence[str]) -> List[str]:
    """`command` prefixed so the kernel kills it when this process dies."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else list(command)


def spawn(command: Sequence[str], log_path: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Starts `command` in its own session, stdout and stderr into log_path."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(die_with_parent(command), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Sends `sig` to the session `process` leads (it and anything it started)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def stop_processes(processes: Sequence[subprocess.Popen], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to all at once, then waits; whatever is still running after
    timeout_s gets SIGKILL."""
    for process in processes:
        signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()


def log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as log:
            return b"".join(log.readlines()[-lines:]).decode(errors="replace")
    except OSError:
        return ""


def log_errors(path: str, lines: int = 20) -> str:
    """The error lines of a Prometheus-style log (level=error/fatal), or its
    tail when it has none: why a server did not start."""
    text = log_tail(path, 1000)
    errors = [line for line in text.splitlines() if re.search(r"\blevel=(error|fatal)\b", line)]
    return "\n".join(errors[-lines:]) + "\n" if errors else log_tail(path, lines)


# Loopback traffic never goes through a proxy, whatever the environment says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Response:
    """An HTTP answer: status, headers (case-insensitive get) and body bytes."""

    def __init__(self, status, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)

    def text(self) -> str:
        return self.body.decode("utf-8")


def http_request(url: str, method: str = "GET", headers: Optional[Dict[str, str]] = None,
                 body: Optional[bytes] = None, timeout: float = 30) -> Response:
    """One HTTP request; HTTP error statuses are returned, not raised. A
    connection that fails raises OSError (urllib's URLError)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read())


def http_get(url: str, timeout: float = 10) -> Response:
    return http_request(url, timeout=timeout)


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05) -> Any:
    """Calls predicate() until it returns a truthy value, which it returns;
    None once timeout_s have passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval_s)


def poll(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05, what: str = "condition") -> Any:
    """wait_until(), raising AssertionError naming `what` on timeout."""
    value = wait_until(predicate, timeout_s, interval_s)
    if not value:
        raise AssertionError(f"timed out waiting for {what}")
    return value


def endpoint_answers(url: str, timeout: float = 2) -> bool:
    """Whether a GET of `url` answers 200."""
    try:
        with OPENER.open(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):  # HTTP error statuses are URLErrors, so OSErrors
        return False


class Startable:
    """A context manager over start() and stop(): `with` starts it and stops
    it again on the way out, and a start that fails half way is stopped too."""

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Server(Startable):
    """A Prometheus-style server started on a free loopback port; retries with
    another port when the one it was given was taken in the meantime.

    Subclasses give `name` and command(port). With no workdir, the server
    makes a temporary one (prefix `temp_prefix`) and removes it on stop()."""

    name = "server"
    temp_prefix = "poolscope-server."

    def __init__(self, binary: str, workdir: Optional[str] = None, port: Optional[int] = None):
        """port: the port to try first (others only if it was taken meanwhile)."""
        if not shutil.which(binary):
            raise ServerError(f"{binary} not found; install it with scripts/setup")
        self.binary = binary
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix=self.temp_prefix)
        os.makedirs(self.workdir, exist_ok=True)
        self.log_path = os.path.join(self.workdir, f"{self.name}.log")
        self.process: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.preferred_port = port

    def command(self, port: int) -> List[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        for attempt in range(START_ATTEMPTS):
            self.port = self.preferred_port if attempt == 0 and self.preferred_port else free_port()
            log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            self.process = spawn(self.command(self.port), self.log_path)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while self.process.poll() is None and time.monotonic() < deadline:
                if endpoint_answers(f"{self.url}/-/ready"):
                    return self
                time.sleep(0.1)
            if self.process.poll() is None:
                self.stop_process()
                raise ServerError(f"{self.name} did not become ready within {READY_TIMEOUT_S} s; "
                                  f"its log ({self.log_path}) ends:\n{log_tail(self.log_path)}")
            with open(self.log_path, "rb") as log:
                log.seek(log_start)
                if b"address already in use" not in log.read():
                    break
        raise ServerError(f"{self.name} exited with status {self.process.returncode}; "
                          f"from its log ({self.log_path}):\n{log_errors(self.log_path)}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop_process(self) -> None:
        if self.process is not None:
            stop_processes([self.process])

    def stop(self) -> None:
        """Stops the process; removes the work directory if it made it. Safe to call twice."""
        try:
            self.stop_process()
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
