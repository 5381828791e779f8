"""Command line: `divjax run` (one experiment), with flags generated from SimConfig's fields.

    divjax run                                  # the embedded default preset
    divjax run --preset synthetic-small --n-nodes 32 --lr 0.1 --out runs/x
    divjax run --dry-run                        # sizes, memory and the largest n that fits
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

from divjax import outdir, presets
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.flags import add_config_flags, config_from_args, prepare_out
from divjax.plugins import label
from divjax.xla_options import program_options


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
    sub.add_parser("presets", help="list the presets")
    # the other subcommands: each module adds its parser and handler (handler(args) -> exit code)
    from divjax import compare, plotting, sweep_cli

    for module in (compare, sweep_cli, plotting):
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """The `divjax` command. A ConfigError (a bad flag, file or directory) is one line
    `divjax: error: ...` and exit code 2; a failed simulation (SimulationError) exit code 1;
    Ctrl-C or SIGTERM exit code 130."""
    from divjax.sim import SimulationError

    args = build_parser().parse_args(argv)
    claimed = outdir.claims()
    try:
        with sigterm_as_interrupt():
            if args.command == "presets":
                for name, fn in sorted(presets.PRESETS.items()):
                    print(f"{name:20s} {(fn.__doc__ or '').strip().splitlines()[0]}")
                return 0
            if args.command == "run":
                return cmd_run(args)
            return args.handler(args)
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


def cmd_run(args) -> int:
    from divjax import checkpoint, report
    from divjax.sim import make_engine, simulate
    from divjax.sizing import memory_estimate

    history, state = [], None
    if args.resume is not None:
        _check_resume_flags(args)
        cfg, hp, seed, spec = checkpoint.load_run_spec(args.resume)
        _check_checkpoint_every(args.checkpoint_every, cfg)   # (not the run's own value)
        args.seed = seed
        if args.checkpoint_every is None:
            args.checkpoint_every = spec.get("checkpoint_every_s")
        out = prepare_out(args.resume, "", writes=outdir.RUN_OUTPUTS, resume=True,
                          adopt=True)
    else:
        cfg = config_from_args(args)
        _check_checkpoint_every(args.checkpoint_every, cfg)
        hp = default_hparams(cfg)
        out = None
        if not args.dry_run:   # found before any data is loaded or anything compiled
            out = prepare_out(args.out, time.strftime(
                f"%Y%m%d-%H%M%S-{label(cfg.algorithm)}-{label(cfg.task)}"), args.overwrite,
                writes=outdir.RUN_OUTPUTS)
            _write_pending_config(out, cfg, args.seed)
    t0 = time.perf_counter()
    probe = None
    if args.dry_run:   # the task's data sized from small builds: no n-node data (issue 33)
        from divjax import memory_scale

        probe = memory_scale.DataProbe(cfg)
    engine = make_engine(cfg, task=probe and probe.task, hp=hp)
    cfg, task, layout = engine.cfg, engine.task, engine.layout
    print(f"divjax: {cfg.algorithm} on {task.name}: n={cfg.n_nodes}, Omega={layout.K}, "
          f"s={cfg.fanout}, D={layout.D} parameters, {cfg.n_stragglers} stragglers, "
          f"{cfg.duration_s:g} simulated s in ticks of {cfg.tick_s:g} s")
    if task.info.get("source"):
        print(f"divjax: data: {task.info['source']}")
    mem = memory_estimate(cfg, layout, cfg.ring_ticks)
    print(f"divjax: state memory {mem['total'] / 2**20:.1f} MiB "
          f"(ring {cfg.ring_ticks} slots, delivery={cfg.delivery}, "
          f"train capacity {cfg.train_capacity})")
    if args.dry_run:
        from divjax import memory, memory_scale

        model = memory.memory_model(cfg, layout, data_bytes=probe.bytes_at(cfg.n_nodes))
        print(memory.format_model(model) + f"\n  ({probe.describe()})")
        biggest = memory_scale.largest_n(cfg, layout, ring_slots=cfg.ring_ticks,
                                         capacity_fraction=cfg.train_capacity / cfg.n_nodes,
                                         data_bytes_fixed=probe.fixed,
                                         data_bytes_per_node=probe.per_node)
        print(f"divjax: largest n that fits on {jax.devices()[0].device_kind} with this "
              f"config: {biggest} (ring {cfg.ring_ticks} slots, "
              f"{cfg.train_capacity / cfg.n_nodes:.0%} of the nodes training at one tick)")
        return 0
    primary = task.primary
    if args.resume is not None:
        state, history = checkpoint.restore(out, engine, hp, key=jax.random.key(args.seed))
        print(f"divjax: resuming {out} at simulated t={int(state.t) * cfg.tick_s:g}s "
              f"({len(history)}/{cfg.num_chunks} eval intervals done)")
    checkpointing = args.checkpoint_every is not None or args.resume is not None
    if checkpointing:   # recorded before orbax and save_run_spec write them
        outdir.record(out, checkpoint.RUN_SPEC, checkpoint.CHECKPOINT_DIR)
    if checkpointing and args.resume is None:
        checkpoint.save_run_spec(out, cfg, hp, args.seed,
                                 extra={"checkpoint_every_s": args.checkpoint_every})
    if args.tensorboard:
        outdir.record(out, "tensorboard")
    tb = _tensorboard_writer(out / "tensorboard") if args.tensorboard else None

    tty = sys.stdout.isatty()

    def progress(c, C, m):
        if tb is not None:
            step = int(round(float(m["time_s"]) / cfg.tick_s))
            for k, v in m.items():
                if k != "node":
                    tb.add_scalar(k, float(v), step)
        if args.quiet or (not tty and c % max(1, C // 10) and c != C):
            return
        bar = "#" * int(30 * c / C)
        print(f"\r[{bar:<30s}] t={float(m['time_s']):7.2f}s  {primary}="
              f"{float(m[primary + '_mean']):.4f} (avg model {float(m[primary + '_avgmodel']):.4f})"
              f"  consensus={float(m['consensus']):.3g}", end="" if tty else "\n", flush=True)

    try:
        if checkpointing:
            state, metrics = checkpoint.drive(
                engine, jax.random.key(args.seed), hp, run_dir=out,
                every_s=args.checkpoint_every, progress=progress, state=state, history=history)
        else:
            state, metrics = simulate(engine, jax.random.key(args.seed), hp, progress=progress)
    except KeyboardInterrupt as e:
        why = f" ({e})" if str(e) else ""
        if not checkpointing:
            print(f"\ndivjax: interrupted{why} (no checkpoint: use --checkpoint-every SECONDS)",
                  file=sys.stderr)
        elif checkpoint.latest_step(out) is None:
            print(f"\ndivjax: interrupted{why} before the first checkpoint: nothing to resume",
                  file=sys.stderr)
        else:
            print(f"divjax: interrupted{why}; continue with divjax run --resume {out}",
                  file=sys.stderr)
        return 130
    finally:
        if tb is not None:
            tb.close()
    wall = time.perf_counter() - t0
    if not args.quiet and tty:
        print()
    cols = ["time_s", f"{primary}_mean", f"{primary}_min", f"{primary}_max",
            f"{primary}_avgmodel", "consensus", "msgs_delivered", "msgs_dropped",
            "msgs_replaced"]
    if primary != "loss" and "loss_mean" in metrics:
        cols.insert(5, "loss_mean")
    if np.any(np.asarray(metrics.get("msgs_lost", 0.0)) > 0):   # loss, churn, download limits
        cols.append("msgs_lost")
    print(report.format_table(metrics, cols))
    extra = {"seed": args.seed, "wall_s": wall, "jax": jax.__version__,
             "device": jax.devices()[0].device_kind,
             # they decide float rounding
             "xla_compiler_options": program_options(engine.advance),
             "task_primary": primary}
    if args.resume is not None:
        extra["resumed"] = True
    info = dict(task.info, primary=primary)
    try:
        _write_results(out, cfg, hp, metrics, info, extra, primary, layout, task, wall, args,
                       report.format_table(metrics, cols))
    except OSError as e:   # a full disk: one line, not a traceback (the table is printed above)
        what = f"{Path(e.filename).name}: " if e.filename else ""
        print(f"divjax: error: the results could not all be written to {out} "
              f"({what}{e.strerror or e}): free space or choose another --out; the metrics "
              f"table is printed above", file=sys.stderr)
        return 1
    print(f"divjax: {wall:.1f} s wall; wrote {out}/ (config.json, metrics.json, metrics.csv, "
          f"plot.png, summary.md)")
    return 0


def _write_results(out, cfg, hp, metrics, info, extra, primary, layout, task, wall, args,
                   table) -> None:
    """OUT/config.json, metrics.*, plot.png (`report.write_run_dir`) and summary.md."""
    from divjax import report

    report.write_run_dir(out, cfg, hp, metrics, info, extra)
    final = float(np.asarray(metrics[f"{primary}_mean"])[-1])
    outdir.write_output(
        out, "summary.md",
        f"# {cfg.algorithm} on {task.name}\n\n"
        f"- n={cfg.n_nodes}, Omega={layout.K}, s={cfg.fanout}, {cfg.n_stragglers} stragglers, "
        f"{cfg.duration_s:g} simulated seconds, seed {args.seed}\n"
        f"- final {primary} (mean over nodes): {final:.4f}\n"
        f"- wall time: {wall:.1f} s on {jax.devices()[0].device_kind}"
        f"{' (this session, resumed from a checkpoint)' if args.resume is not None else ''}\n\n"
        f"```\n{table}\n```\n")


def _check_resume_flags(args) -> None:
    """--resume continues a run exactly as it was configured: flags it would ignore are
    refused (configuration flags, --seed, --preset, --out, --overwrite)."""
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    ignored = ["--" + k.replace("_", "-") for k in vars(args) if k in fields]
    ignored += [flag for flag, on in (("--seed", args.seed != 0), ("--out", args.out is not None),
                                      ("--preset", args.preset != presets.DEFAULT_PRESET),
                                      ("--overwrite", args.overwrite)) if on]
    if ignored:
        raise ConfigError(f"--resume {args.resume} continues that run with its own config and "
                          f"seed (its run.json): drop {' '.join(ignored)}, or start a new run")


def _check_checkpoint_every(every, cfg: SimConfig) -> None:
    """--checkpoint-every: a positive whole number of eval intervals (checkpoints are taken
    between them)."""
    if every is None:
        return
    ratio = every / cfg.eval_every_s if np.isfinite(every) and every > 0 else -1.0
    if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
        raise ConfigError(f"--checkpoint-every {every:g} is invalid: checkpoints are taken "
                          f"between eval intervals, so give a positive multiple of "
                          f"--eval-every-s {cfg.eval_every_s:g}")


def _write_pending_config(out: Path, cfg: SimConfig, seed: int) -> None:
    """OUT/config.json at the start of a run (the unresolved config and the seed; the finished
    run rewrites it in full): proves OUT writable before data is loaded or code compiled."""
    import json

    outdir.write_output(out, "config.json", json.dumps(
        {"config": dataclasses.asdict(cfg), "seed": seed, "status": "running"}, indent=1,
        default=str))


def _tensorboard_writer(logdir: Path):
    """A SummaryWriter-like object (add_scalar, close), or None with a message if none exists."""
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(logdir))
    except ImportError:
        pass
    try:
        import tensorflow as tf  # noqa: F401

        class _TF:
            def __init__(self, path):
                self.w = tf.summary.create_file_writer(str(path))

            def add_scalar(self, tag, value, step):
                with self.w.as_default():
                    tf.summary.scalar(tag, value, step=step)

            def close(self):
                self.w.flush()

        return _TF(logdir)
    except ImportError:
        print("divjax: --tensorboard skipped: no writer installed "
              "(pip install tensorboardX, or tensorflow)", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
