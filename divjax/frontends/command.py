"""How every `divjax` subcommand ends: its exit code, its one-line errors and its signals.

Shared by the `divjax` command line (`divjax.frontends.cli`) and the subcommand modules run as scripts
(`python -m divjax.frontends.compare`), so that neither imports the other:

- a ConfigError (a bad flag, file or directory): one line `divjax: error: ...`, exit code 2;
- a failed simulation (SimulationError): one line, exit code 1;
- Ctrl-C or SIGTERM: one line, exit code 130 (SIGTERM raises KeyboardInterrupt like Ctrl-C);
- the output directories the command claimed (`outdir.claims`) are released when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from divjax.frontends import outdir
from divjax.config import ConfigError


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (a scheduler's kill, `kill PID`) raises KeyboardInterrupt like
    Ctrl-C, so runs checkpoint and say so instead of dying silently."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(handler, args: argparse.Namespace) -> int:
    """`handler(args)`'s exit code, with the errors and signals above turned into their line
    and exit code."""
    from divjax.engine.sim import SimulationError

    claimed = outdir.claims()
    try:
        with sigterm_as_interrupt():
            return handler(args)
    except ConfigError as e:
        print(f"divjax: error: {e}", file=sys.stderr)
        return 2
    except SimulationError as e:
        print(f"divjax: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"\ndivjax: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return 130
    finally:   # the command's claim on its --out ends with it
        outdir.release_since(claimed)


def subcommand_main(add_parser, name: str, argv: list[str]) -> int:
    """`divjax NAME ARGV...` for the one subcommand that `add_parser(subparsers)` registers
    (what `python -m divjax.NAME` runs)."""
    parser = argparse.ArgumentParser(prog="divjax")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([name, *argv])
    return run_command(args.handler, args)
