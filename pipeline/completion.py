"""`dance completion bash|zsh|tcsh`: a shell completion script generated from the argparse
parser itself (by shtab), so it always knows every command, flag and choice.

    dance completion bash > ~/.local/share/bash-completion/completions/dance
    dance completion zsh > "${fpath[1]}/_dance"
"""
from __future__ import annotations

import argparse

# arguments that name files: completed as paths
FILE_ARGS = {"graph", "file", "inputs", "recording", "codec", "config", "output", "json",
             "report", "directory", "images", "audio"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print the completion script of `dance` for SHELL; e.g. "
                       "`dance completion bash > ~/.local/share/bash-completion/completions/"
                       "dance`, or `eval \"$(dance completion bash)\"` in ~/.bashrc.")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    p.set_defaults(func=cmd_completion)


def _mark_files(parser: argparse.ArgumentParser, shtab) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _mark_files(child, shtab)
        elif action.dest in FILE_ARGS and action.choices is None:
            action.complete = shtab.FILE  # type: ignore[attr-defined]  # shtab reads it


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    from .cli import build_parser
    parser = build_parser()
    _mark_files(parser, shtab)
    print(shtab.complete(parser, shell=args.shell))
    return 0
