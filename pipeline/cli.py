"""The `dance` command line: graphs (run, validate, nodes, keys) and codecs (see dance/cli.py)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import version

from . import graph as graphs
from .launcher import RunError, check_standalone, run_graph, run_group
from .nodedoc import describe_nodes, describe_types
from .transport import create_keys


def _load(args) -> graphs.Graph | None:
    try:
        return graphs.load(args.graph, args.set)
    except graphs.GraphError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return None


def cmd_validate(args) -> int:
    graph = _load(args)
    if graph is None:
        return 2
    crossing = sum(graph.crossing(e) for e in graph.edges)
    print(f"{args.graph}: ok ({len(graph.nodes)} nodes, {len(graph.edges)} edges, "
          f"{len(graph.groups)} groups, {crossing} edges over ZeroMQ)")
    return 0


def cmd_run(args) -> int:
    graph = _load(args)
    if graph is None:
        return 2
    if args.replica is not None and not args.group:
        print("error: --replica needs --group", file=sys.stderr)
        return 2
    try:
        if args.group:
            if args.group not in graph.groups:
                print(f"error: {args.graph}: no group named '{args.group}' "
                      f"(groups: {', '.join(graph.groups)})", file=sys.stderr)
                return 2
            if args.endpoints:  # started by the launcher, which chose every endpoint
                endpoints, replica = json.loads(args.endpoints), args.replica or 0
            else:
                endpoints, replica = None, check_standalone(graph, args.group, args.replica)
            return run_group(graph, args.group, replica=replica, endpoints=endpoints,
                             duration=args.duration, stats_to=args.stats_to,
                             report=args.report, show_status=not args.quiet,
                             connect_timeout_s=args.connect_timeout)
        return run_graph(graph, args.set, duration=args.duration, report=args.report,
                         show_status=not args.quiet)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_nodes(args) -> int:
    if not args.types:
        print(describe_nodes(markdown=args.markdown))
        return 0
    if args.markdown:
        print("error: --markdown describes the built-in types; leave out TYPE", file=sys.stderr)
        return 2
    text, errors = describe_types(args.types)
    if text:
        print(text)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 2 if errors else 0


def cmd_keys(args) -> int:
    try:
        create_keys(args.directory, force=args.force)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote CURVE key pairs server.key/.key_secret and client.key/.key_secret to "
          f"{args.directory}; copy the directory to both hosts and set `curve_keys:` in the graph")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dance", description="Split computing for wearable sensors: dataflow graphs over "
                                  "ZeroMQ and DANCE neural codecs.")
    parser.add_argument("--version", action="version", version=f"dance {version('dance')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a graph", description="Run a YAML graph; groups run "
                         "as separate processes linked by ZeroMQ.")
    run.add_argument("graph", help="graph YAML file")
    run.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                     help="override a node parameter (YAML value), repeatable")
    run.add_argument("--report", metavar="FILE", help="write per-node figures as JSON")
    run.add_argument("--duration", type=float, metavar="S", help="stop sources after S seconds")
    run.add_argument("--group", help="run only this group, e.g. on its own host; groups find "
                     "each other through the endpoints in the graph (docs/distributed.md)")
    run.add_argument("--replica", type=int, metavar="K",
                     help="with --group, which replica of a group with `replicas:` to run")
    run.add_argument("--quiet", action="store_true", help="no live status line")
    run.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                     help="how long sources wait for peer groups before starting without them "
                          "(their packets are then dropped and counted until they connect; "
                          "default 60)")
    run.add_argument("--endpoints", help=argparse.SUPPRESS)
    run.add_argument("--stats-to", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a graph and report every error with "
                              "file:line (exit 2 on errors)")
    validate.add_argument("graph")
    validate.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE")
    validate.set_defaults(func=cmd_validate)

    nodes = sub.add_parser("nodes", help="list node types with their ports and parameters",
                           description="List the built-in node types and those of installed "
                           "plugin packages (entry-point group dance.nodes), or describe the "
                           "given types.")
    nodes.add_argument("types", nargs="*", metavar="TYPE",
                       help="only these types: a built-in or plugin name, or module:Class")
    nodes.add_argument("--markdown", action="store_true",
                       help="print the reference page of the built-in types (docs/nodes.md)")
    nodes.set_defaults(func=cmd_nodes)

    keys = sub.add_parser("keys", help="create CURVE key pairs for encrypted links")
    keys.add_argument("directory")
    keys.add_argument("--force", action="store_true",
                      help="replace keys already in the directory (peers then need new copies)")
    keys.set_defaults(func=cmd_keys)

    from dance.cli import register
    register(sub)
    from perception.split_cli import register as register_split
    register_split(sub)
    from . import cli_echo, cli_info, completion, scaffold
    for module in (cli_info, cli_echo, scaffold, completion):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # `type: mymodule:Class` imports from the current directory, searched last: a PIL.py or
    # numpy.py lying there never shadows the installed package
    sys.path.append(os.getcwd())
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
