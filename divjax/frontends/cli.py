"""Command line: `divjax run` (one experiment), with flags generated from SimConfig's fields;
the subcommands each add their own parser (`compare`, `sweep`, `plot`). `divjax run` itself is
`divjax.frontends.cli_run`; the exit codes and signals of every subcommand, `divjax.frontends.command`.

    divjax run                                  # the embedded default preset
    divjax run --preset synthetic-small --n-nodes 32 --lr 0.1 --out runs/x
    divjax run --dry-run                        # sizes, memory and the largest n that fits
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from divjax.frontends import presets
from divjax.frontends.cli_run import cmd_run
from divjax.frontends.command import run_command
from divjax.frontends.flags import add_config_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="divjax", description="Asynchronous decentralized learning on a simulated clock.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment and write its outputs")
    run.add_argument("--preset", default=presets.DEFAULT_PRESET,
                     help="named configuration (see `divjax presets`)")
    run.add_argument("--seed", type=int, default=0, help="PRNG seed of the run")
    run.add_argument("--out", type=Path, default=None,
                     help="output directory (default: a new runs/<date>-<time>-<algorithm>-"
                          "<task>[-N]); refused if it already holds results, see --overwrite")
    run.add_argument("--overwrite", action="store_true",
                     help="let --out replace the results (and checkpoints) already there")
    run.add_argument("--dry-run", action="store_true",
                     help="check the config, print sizes and memory, and stop")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                     help="save the full state every SECONDS of simulated time, at the end and "
                          "on Ctrl-C (into OUT/checkpoints)")
    run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                     help="continue the checkpointed run in RUN_DIR (its config, seed and "
                          "HParams; configuration flags given with it are refused)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard scalars to OUT/tensorboard (needs tensorboardX "
                          "or tensorflow)")
    add_config_flags(run)
    run.set_defaults(handler=cmd_run)
    sub.add_parser("presets", help="list the presets").set_defaults(handler=cmd_presets)
    # the other subcommands: each module adds its parser and handler (handler(args) -> exit code)
    from divjax.frontends import compare, plotting, sweep_cli

    for module in (compare, sweep_cli, plotting):
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """The `divjax` command. A ConfigError (a bad flag, file or directory) is one line
    `divjax: error: ...` and exit code 2; a failed simulation (SimulationError) exit code 1;
    Ctrl-C or SIGTERM exit code 130 (`divjax.frontends.command`)."""
    args = build_parser().parse_args(argv)
    return run_command(args.handler, args)


def cmd_presets(args) -> int:
    """`divjax presets`: each preset's name and the first line of its docstring."""
    for name, fn in sorted(presets.PRESETS.items()):
        print(f"{name:20s} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
