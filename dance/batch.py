"""Dataset-scale jobs as tasks on an existing engine: a local process pool (default) or a Ray
cluster (`--ray auto|ADDRESS`); no scheduler of our own (docs/scale.md).

Every finished task's result is written at once to the job's state folder, so a killed worker
or a killed job loses only the tasks in flight: rerunning the same command skips the finished
ones. Results come back in task order, so a table merged from them is the same whatever the
worker count or the order tasks finished in. Results are JSON, never pickles.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

STATE_ROOT = Path("runs/jobs")


class BatchError(Exception):
    """A job that cannot start or finish; the message is one line for the user."""


@dataclass(frozen=True)
class Task:
    key: str      # unique in its job and stable across runs: names its result file
    args: dict    # JSON-able arguments of the task function


def job_fingerprint(job: dict) -> str:
    """A digest of everything that decides a job's results (command, inputs, codec hashes, ...)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


def state_folder(state: str | Path | None, kind: str, job: dict) -> Path:
    """--state, or runs/jobs/KIND-<fingerprint> (the same command finds its own results)."""
    return Path(state) if state else STATE_ROOT / f"{kind}-{job_fingerprint(job)[:12]}"


class ResultStore:
    """One JSON file per finished task under `folder`, with the job that made them."""

    def __init__(self, folder: Path, job: dict):
        self.folder = folder
        self.tasks = folder / "tasks"
        manifest = folder / "job.json"
        fingerprint = job_fingerprint(job)
        if manifest.is_file():
            try:
                held = json.loads(manifest.read_text()).get("fingerprint")
            except (ValueError, AttributeError):
                held = None
            if held != fingerprint:
                raise BatchError(f"{folder}: holds results of another job (different inputs, "
                                 "codec or options): give another --state or delete it")
        self.tasks.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            _write_atomic(manifest, {"fingerprint": fingerprint, "job": job})

    def _file(self, key: str) -> Path:
        return self.tasks / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"

    def load(self, key: str):
        """The stored result of `key`, or None (absent, or a file cut short by a crash)."""
        path = self._file(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except ValueError:
            return None
        return entry["result"] if isinstance(entry, dict) and entry.get("key") == key else None

    def save(self, key: str, result) -> None:
        _write_atomic(self._file(key), {"key": key, "result": result})


def _write_atomic(path: Path, document) -> None:
    partial = path.with_name(path.name + f".{os.getpid()}.part")
    partial.write_text(json.dumps(document, allow_nan=True))
    os.replace(partial, path)


class one_thread:
    """Torch on one thread inside the block: a task's results must not depend on how many
    threads its worker has (float sums in another order can move a rounding, hence bytes),
    and one thread is also the device-side speed the tables report."""

    def __enter__(self):
        import torch
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch
        torch.set_num_threads(self.threads)


def default_workers() -> int:
    """All the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_tasks(function: Callable[[dict], object], tasks: Sequence[Task], store: ResultStore,
              workers: int | None = None, ray: str | None = None,
              desc: str = "tasks") -> list:
    """Run `function(task.args)` for every task without a stored result; returns all results in
    task order. `function` must be importable by name (a module-level function): it runs in
    other processes. A task that raises fails the job after the others finished; their results
    are kept, so a rerun does only the failed and missing ones."""
    from tqdm import tqdm

    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise BatchError("two tasks share a key")
    results = {t.key: store.load(t.key) for t in tasks}
    todo = [t for t in tasks if results[t.key] is None]
    done = len(tasks) - len(todo)
    if done:
        print(f"resuming: {done} of {len(tasks)} tasks already done in {store.folder}",
              file=sys.stderr)
    failures: list[str] = []
    bar = tqdm(total=len(tasks), initial=done, desc=desc, unit="task", file=sys.stderr,
               dynamic_ncols=True)

    def finished(task: Task, result, error: str | None) -> None:
        if error is None:
            store.save(task.key, result)
            results[task.key] = result
        else:
            failures.append(f"{task.key}: {error}")
        bar.update(1)

    try:
        if todo and ray is not None:
            _run_on_ray(function, todo, ray, finished)
        elif todo and (workers or default_workers()) > 1 and len(todo) > 1:
            _run_on_pool(function, todo, workers or default_workers(), finished, store)
        else:
            for task in todo:
                finished(task, *_call(function, task.args))
    finally:   # also when the job stops early (a dead worker): what it did is on disk
        bar.close()
        ran = sum(results[t.key] is not None for t in todo)
        print(f"{ran} tasks run, {done} reused, {len(failures)} failed (results: {store.folder})",
              file=sys.stderr)
    if failures:
        raise BatchError(f"{len(failures)} of {len(tasks)} tasks failed; rerun to retry them. "
                         f"First: {failures[0]}")
    return [results[k] for k in keys]


def _call(function: Callable[[dict], object], args: dict) -> tuple[object, str | None]:
    """(result, None) or (None, one-line reason): an exception in a task is its failure, and so
    is a result that is not JSON. The result comes back as JSON decodes it, so a fresh run and
    a resumed one (which loads it from its file) merge the same values."""
    try:
        return json.loads(json.dumps(function(args), allow_nan=True)), None
    except Exception as exc:  # noqa: BLE001 - any task error is reported, never a traceback
        return None, " ".join(str(exc).split()) or type(exc).__name__


def _worker_threads(count: int) -> None:
    """Share the cores among the pool's workers (torch would take all of them in each)."""
    threads = max(1, default_workers() // count)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass


def _run_on_pool(function, todo: list[Task], workers: int, finished, store: ResultStore) -> None:
    """A spawn-context process pool (no fork of a process holding torch threads)."""
    workers = min(workers, len(todo))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=_worker_threads, initargs=(workers,)) as pool:
        pending = {pool.submit(_call, function, t.args): t for t in todo}
        try:
            while pending:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in ready:
                    finished(pending.pop(future), *future.result())
        except BrokenProcessPool:
            raise BatchError(f"a worker process died (killed, or out of memory) with "
                             f"{len(pending)} tasks unfinished; the finished ones are kept in "
                             f"{store.folder}: rerun the same command to do the rest") from None


@contextlib.contextmanager
def local_ray_head(cpus: int = 2):
    """A Ray head on 127.0.0.1 with its own token, for tests and benchmarks; yields (address,
    environment for the drivers). It is stopped by stopping its `ray start --block`, not by
    `ray stop`, which would stop every Ray cluster of this user."""
    import secrets
    import signal
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head",
                             "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", str(cpus), "--include-dashboard=false",
                             "--disable-usage-stats"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in head.stdout or ():
            if "Ray runtime started" in line:
                break
        else:
            raise BatchError(f"ray start --head exited with {head.wait()}")
        yield f"127.0.0.1:{port}", env
    finally:
        head.terminate()      # `ray start --block` stops the processes it started (~2 s)
        head.wait(60)
        try:
            os.killpg(head.pid, signal.SIGKILL)     # any that outlived it
        except ProcessLookupError:
            pass


def _run_on_ray(function, todo: list[Task], address: str, finished) -> None:
    """Tasks as Ray remote calls on the cluster at `address` ("auto": the one this machine
    belongs to, e.g. started by `ray start --head`)."""
    try:
        import ray
    except ImportError:
        raise BatchError("--ray needs the ray package: pip install 'dance[scale]'") from None
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BatchError(f"--ray {address}: cannot join a Ray cluster "
                         f"({' '.join(str(exc).split())[:200]}); a cluster with token "
                         "authentication needs RAY_AUTH_MODE=token and its token here") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        pending = {remote.remote(function, t.args): t for t in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    finished(task, *ray.get(ref))
                except ray.exceptions.RayError as exc:   # the worker died
                    finished(task, None, f"Ray worker failed ({type(exc).__name__})")
    finally:
        ray.shutdown()
