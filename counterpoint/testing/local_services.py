"""A cluster's services on loopback: Beam's job service and an external SDK worker pool.

``local_job_service_main`` plus ``worker_pool_main`` (``--environment_type=EXTERNAL``) is the
topology Flink, Spark and Dataflow Runner v2 use, each in its own process here. The tests and
``benchmarks/scale.py`` run the corpus pipeline on it; other loopback servers (e.g. moto's S3) use
:func:`start_service` / :func:`stop_services` the same way.

    with portable_services(log_dir) as services:
        run(services.options, config=cfg)   # --runner=PortableRunner --job_endpoint=... --environment_*
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

HOST = "127.0.0.1"


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Returns once something listens on ``port``; raises if ``proc`` exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before listening on {port}")
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s}s")


def start_service(args: Sequence[str], port: int, log_path: str, *, env: Optional[Mapping[str, str]] = None,
                  cwd: Optional[str] = None) -> subprocess.Popen:
    """Starts ``args`` in its own session (output to ``log_path``) and waits until it listens on ``port``."""
    with open(log_path, "wb") as log:  # the child keeps its own copy of the handle
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    try:
        wait_for_port(port, proc)
    except Exception:
        stop_services(proc)
        raise
    return proc


def stop_services(*procs: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM to each, then SIGKILL to whatever is still running after ``timeout_s``."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclasses.dataclass
class PortableServices:
    job_port: int
    pool_port: int
    procs: Dict[str, subprocess.Popen]  # "job_service", "worker_pool"

    @property
    def options(self) -> List[str]:
        """PortableRunner options for a job on these services."""
        return ["--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool_port}"]


@contextlib.contextmanager
def portable_services(log_dir: str, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                      before_stop: Optional[Callable[[str, subprocess.Popen], None]] = None
                      ) -> Iterator[PortableServices]:
    """Starts a job service and a worker pool (logs ``job_service.log`` / ``worker_pool.log`` in
    ``log_dir``), yields them, stops both. ``before_stop(name, proc)`` runs for each just before it
    is stopped (e.g. to read its peak memory)."""
    # The worker pool starts SDK workers with `python -c ...`: this interpreter must be first on PATH.
    env = dict(env if env is not None else os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    services = PortableServices(free_port(), free_port(), {})
    try:
        for name, args, port in (
            ("job_service", ["-m", "apache_beam.runners.portability.local_job_service_main",
                             "--port", str(services.job_port)], services.job_port),
            ("worker_pool", ["-m", "apache_beam.runners.worker.worker_pool_main",
                             "--service_port", str(services.pool_port)], services.pool_port),
        ):
            services.procs[name] = start_service([sys.executable, *args], port, os.path.join(log_dir, f"{name}.log"),
                                                 env=env, cwd=cwd)
        yield services
    finally:
        for name, proc in reversed(list(services.procs.items())):
            if before_stop is not None:
                before_stop(name, proc)
            stop_services(proc)
