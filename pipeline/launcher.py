"""`dance run`: one group in this process, or one worker process per local group (and per
replica of a replicated group).

Workers are `dance run GRAPH --group NAME [--replica K]` processes; they report per-node figures
to the launcher as JSON over a ZeroMQ PUSH socket, and the launcher prints one status line and
writes the report. Groups on other hosts (`host:` in the graph) are started there by the user,
with the same command; they find each other through the endpoints written in the graph.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import zmq

from .graph import Graph
from .runtime import GroupRunner
from .status import StatusLine, print_summary
from .transport import free_endpoint

DRAIN_TIMEOUT_S = 10.0


class RunError(RuntimeError):
    pass


STATUS_MAX_BYTES = 16 << 20   # a worker's status report; libzmq drops larger messages


def resolve_endpoints(graph: Graph,
                      given: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Every group's inbox endpoints, one per replica: from --endpoints (the launcher's
    choice), then the graph, then free ports on 127.0.0.1."""
    endpoints = {}
    for name, group in graph.groups.items():
        endpoints[name] = ((given or {}).get(name) or group.endpoints()
                           or [free_endpoint() for _ in range(group.replicas)])
    return endpoints


def check_standalone(graph: Graph, group: str, replica: int | None) -> int:
    """For `--group` without the launcher: the replica to run, after checking that every group
    this one exchanges packets with has its endpoint in the graph (the only way to find it)."""
    spec = graph.groups[group]
    if replica is None and spec.replicas > 1:
        raise RunError(f"group '{group}' has {spec.replicas} replicas: start each with "
                       f"--replica 0..{spec.replicas - 1}")
    replica = replica or 0
    if not 0 <= replica < spec.replicas:
        raise RunError(f"--replica {replica}: group '{group}' has replicas 0..{spec.replicas - 1}")
    peers = set()
    for edge in graph.edges:
        if graph.crossing(edge):
            src, dst = graph.nodes[edge.src].group, graph.nodes[edge.dst].group
            if src == group:
                peers.add(dst)
            elif dst == group:
                peers.add(group)
    for name in sorted(peers):
        if graph.groups[name].endpoints() is None:
            raise RunError(f"{graph.path}:{graph.groups[name].line}: group '{name}' needs an "
                           f"'endpoint:' for groups started one by one with --group (e.g. "
                           f"endpoint: \"tcp://127.0.0.1:6000\"); only `dance run` without "
                           f"--group picks ports by itself")
    return replica


def _install_stop_handlers(request_stop) -> None:
    """First Ctrl-C/SIGTERM drains; a second one abandons the queues."""
    presses = []

    def handler(signum, frame):
        presses.append(signum)
        request_stop(hard=len(presses) > 1)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _stop_after(runner: GroupRunner, seconds: float) -> None:
    """Ask sources to stop; if the graph has not drained after a grace period, abandon it."""
    def later():
        runner.request_stop()
        if not runner.hard_stop.wait(DRAIN_TIMEOUT_S):
            runner.request_stop(hard=True)
    timer = threading.Timer(seconds, later)
    timer.daemon = True
    timer.start()


def run_group(graph: Graph, group: str, *, replica: int = 0,
              endpoints: dict[str, list[str]] | None = None, duration: float | None = None,
              stats_to: str | None = None, report: str | None = None,
              show_status: bool = True, connect_timeout_s: float = 60.0) -> int:
    """Run one group (one replica of it) here. As a worker (`stats_to`), stream figures to the
    launcher."""
    endpoints = resolve_endpoints(graph, endpoints)
    worker = graph.groups[group].worker(replica)
    ctx: zmq.Context = zmq.Context.instance()
    push = None
    if stats_to:
        push = ctx.socket(zmq.PUSH)
        push.linger = 2000
        push.connect(stats_to)
    status = StatusLine(enabled=show_status and push is None)
    last = [0.0]

    def on_status(snapshot: dict) -> None:
        now = time.monotonic()
        if now - last[0] < 1.0:
            return
        last[0] = now
        if push is not None:
            push.send_json({"group": worker, "final": False, **snapshot})
        status.update(snapshot["nodes"])

    runner = GroupRunner(graph, group, endpoints, on_status=on_status,
                         connect_timeout_s=connect_timeout_s, replica=replica)

    def request_stop(hard: bool = False) -> None:
        runner.request_stop(hard)
        if not hard:
            _stop_after(runner, 0)
    _install_stop_handlers(request_stop)
    if duration:
        _stop_after(runner, duration)
    started = time.monotonic()
    with status.owning_output():
        code = runner.run()
    snapshot = runner.snapshot()
    if push is not None:    # the launcher prints the errors of all its workers together
        push.send_json({"group": worker, "final": True, **snapshot})
        push.close()
    else:
        errors = error_lines([snapshot])
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        result = _report(graph, time.monotonic() - started, code, [snapshot], errors)
        print_summary(result)
        if report:
            _write_report(report, result)
    return code


def run_graph(graph: Graph, overrides: list[str], *, duration: float | None = None,
              report: str | None = None, show_status: bool = True) -> int:
    """Run every local group: in this process if there is one, else one worker each."""
    if len(graph.groups) == 1:
        return run_group(graph, next(iter(graph.groups)), duration=duration, report=report,
                         show_status=show_status)
    local = [(name, k) for name, g in graph.groups.items() if g.host == "local"
             for k in range(g.replicas)]
    endpoints = resolve_endpoints(graph)
    for name, group in graph.groups.items():
        if group.host != "local":
            replicas = f" --replica K (K = 0..{group.replicas - 1})" if group.replicas > 1 else ""
            print(f"note: group '{name}' runs on host '{group.host}': start it there with "
                  f"`dance run {graph.path} --group {name}{replicas}`", file=sys.stderr)
    ctx: zmq.Context = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull.maxmsgsize = STATUS_MAX_BYTES
    stats_to = free_endpoint()
    pull.bind(stats_to)
    status = StatusLine(enabled=show_status)
    workers, forwarders = {}, []
    for name, replica in local:
        cmd = [sys.executable, "-m", "pipeline.cli", "run", graph.path, "--group", name,
               "--replica", str(replica), "--endpoints", json.dumps(endpoints),
               "--stats-to", stats_to]
        cmd += [arg for item in overrides for arg in ("--set", item)]
        if duration:
            cmd += ["--duration", str(duration)]
        # with a live status line the launcher relays its workers' output, clearing the line
        piped = subprocess.PIPE if status.enabled else None
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=piped, stderr=piped,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"} if piped else None)
        workers[graph.groups[name].worker(replica)] = proc
        if piped:
            forwarders += [_relay(proc.stdout, "stdout"), _relay(proc.stderr, "stderr")]
    stopping = []

    def request_stop(hard: bool = False) -> None:
        stopping.append(hard)
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
    _install_stop_handlers(request_stop)

    started = time.monotonic()
    latest: dict[str, dict] = {}
    with status.owning_output():    # ignored: messages not from a worker (anyone local can send)
        ignored = _collect(pull, workers, latest, status, stopping, request_stop, forwarders)
    if ignored:
        print(f"warning: ignored {ignored} status message(s) that were not a worker's report",
              file=sys.stderr)
    pull.close()
    codes = {name: proc.returncode for name, proc in workers.items()}
    code = 0 if all(c == 0 for c in codes.values()) else 1
    finals = [latest[name] for name in workers if latest.get(name, {}).get("final")]
    exits = [line for name in workers
             if (line := _exit_problem(name, codes[name], latest.get(name))) is not None]
    errors = error_lines(finals, extra=exits)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    result = _report(graph, time.monotonic() - started, code, list(latest.values()), errors)
    result["groups"] = {name: {"exit_code": c, "endpoint": _endpoint_of(graph, name, endpoints)}
                        for name, c in codes.items()}
    print_summary(result)
    if report:
        _write_report(report, result)
    return code


def _collect(pull, workers: dict, latest: dict, status: StatusLine, stopping: list,
             request_stop, forwarders: list) -> int:
    """Gather the workers' reports until they have all exited; returns how many messages
    were not a worker's report. Whatever happens, no worker outlives the launcher."""
    ignored = 0
    try:
        while any(p.poll() is None for p in workers.values()) or pull.poll(0):
            if pull.poll(200):
                message = _status_message(pull.recv(), workers)
                if message is None:
                    ignored += 1
                    continue
                latest[message["group"]] = message
                status.update({k: v for m in latest.values() for k, v in m["nodes"].items()})
            if not stopping and any(p.poll() not in (None, 0) for p in workers.values()):
                request_stop()
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for thread in forwarders:    # the rest of their output, before the table
            thread.join(5)
    return ignored


def _relay(pipe, name: str) -> threading.Thread:
    """Copy a worker's output to this process's stdout/stderr (looked up per line, so the
    status line's clearing stream is used), line by line."""
    def run() -> None:
        for raw in iter(pipe.readline, b""):
            stream = getattr(sys, name)
            stream.write(raw.decode(errors="replace"))
            stream.flush()
        pipe.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _exit_problem(worker: str, code: int, message: dict | None) -> str | None:
    """A worker that failed without its report saying why (killed, crashed), or None."""
    if code == 0:
        return None
    if message is None or not message.get("final"):
        return f"group '{worker}' {_exit_text(code)} without a final report"
    if message.get("error") or message.get("failures"):
        return None
    return f"group '{worker}' {_exit_text(code)}"


def _exit_text(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def error_lines(snapshots: list[dict], extra: Sequence[str] = ()) -> list[str]:
    """What went wrong, one line each: every node failure and `extra` (workers that died);
    only when there are none, the links that never connected (after a failure those are its
    consequence: the failed group stopped)."""
    failures = [f for s in snapshots for f in s.get("failures") or [] if isinstance(f, str)]
    primary = failures + list(extra)
    if primary:
        return primary
    return [s["error"] for s in snapshots if isinstance(s.get("error"), str)]


def _status_message(raw: bytes, workers: dict) -> dict | None:
    """A worker's status report, or None for anything else on the (unauthenticated) socket."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(message, dict) and message.get("group") in workers
            and isinstance(message.get("nodes"), dict)
            and all(isinstance(v, dict) for v in message["nodes"].values())
            and isinstance(message.get("links", {}), dict)
            and isinstance(message.get("failures", []), list)):
        return None
    return message


def _endpoint_of(graph: Graph, worker: str, endpoints: dict[str, list[str]]) -> str:
    group, _, replica = worker.partition("[")
    return endpoints[group][int(replica.rstrip("]") or 0)]


def _report(graph: Graph, wall_s: float, code: int, snapshots: list[dict],
            errors: list[str]) -> dict:
    nodes, links = {}, {}
    for snap in snapshots:
        nodes.update(snap["nodes"])
        links.update(snap.get("links", {}))
    order = {name: i for i, name in enumerate(graph.nodes)}
    order.update({name: order.get(name.partition("[")[0], 0) for name in nodes})
    return {"graph": graph.name, "file": graph.path, "wall_s": round(wall_s, 3),
            "exit_code": code, "error": errors[0] if errors else None, "errors": errors,
            "nodes": dict(sorted(nodes.items(), key=lambda kv: (order.get(kv[0], 0), kv[0]))),
            "links": links}


def _write_report(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
