"""Command line: `divjax run` (one experiment), with flags generated from SimConfig's fields.

    divjax run                                  # the embedded default preset
    divjax run --preset synthetic-small --n-nodes 32 --lr 0.1 --out runs/x
    divjax run --dry-run                        # sizes, memory and the largest n that fits
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from divjax import presets
from divjax.config import ConfigError, SimConfig, default_hparams


def _parse_tuple(text: str) -> tuple:
    return tuple(float(x) for x in text.split(",") if x.strip())


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per SimConfig field; unset flags keep the preset's value."""
    group = parser.add_argument_group("configuration (override the preset)")
    for f in dataclasses.fields(SimConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS)
        elif isinstance(default, tuple):
            group.add_argument(flag, type=_parse_tuple, default=argparse.SUPPRESS,
                               help="comma-separated numbers")
        else:
            group.add_argument(flag, type=type(default), default=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    base = presets.get_preset(args.preset)
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields}
    return dataclasses.replace(base, **overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="divjax", description="Asynchronous decentralized learning on a simulated clock.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment and write its outputs")
    run.add_argument("--preset", default=presets.DEFAULT_PRESET,
                     help="named configuration (see `divjax presets`)")
    run.add_argument("--seed", type=int, default=0, help="PRNG seed of the run")
    run.add_argument("--out", type=Path, default=None, help="output directory (default runs/...)")
    run.add_argument("--dry-run", action="store_true",
                     help="check the config, print sizes and memory, and stop")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                     help="save the full state every SECONDS of simulated time, at the end and "
                          "on Ctrl-C (into OUT/checkpoints)")
    run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                     help="continue the checkpointed run in RUN_DIR (its config, seed and "
                          "HParams; other configuration flags are ignored)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard scalars to OUT/tensorboard (needs tensorboardX "
                          "or tensorflow)")
    add_config_flags(run)
    sub.add_parser("presets", help="list the presets")
    for module in _plugin_modules():
        module.add_parser(sub)
    return parser


# Modules that add their own subcommand: each defines add_parser(subparsers) and registers
# its handler with parser.set_defaults(handler=fn); fn(args) -> exit code.
PLUGINS = ("divjax.compare", "divjax.sweep", "divjax.plotting")


def _plugin_modules():
    import importlib
    import importlib.util

    for name in PLUGINS:
        if importlib.util.find_spec(name) is not None:
            yield importlib.import_module(name)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "presets":
            presets._load_data_presets()
            for name, fn in sorted(presets.PRESETS.items()):
                print(f"{name:20s} {(fn.__doc__ or '').strip().splitlines()[0]}")
            return 0
        if args.command == "run":
            return cmd_run(args)
        return args.handler(args)
    except ConfigError as e:
        print(f"divjax: configuration error: {e}", file=sys.stderr)
        return 2


def cmd_run(args) -> int:
    from divjax import checkpoint, report
    from divjax.sim import make_engine, memory_estimate, simulate

    history, state = [], None
    if args.resume is not None:
        cfg, hp, seed, spec = checkpoint.load_run_spec(args.resume)
        args.seed = seed
        if args.checkpoint_every is None:
            args.checkpoint_every = spec.get("checkpoint_every_s")
    else:
        cfg = config_from_args(args)
        hp = default_hparams(cfg)
    t0 = time.perf_counter()
    engine = make_engine(cfg, hp=hp)
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
        from divjax import memory

        data = memory.task_data_bytes(task)
        model = memory.memory_model(cfg, layout, data_bytes=data)
        print(memory.format_model(model))
        biggest = memory.largest_n(cfg, layout, ring_slots=cfg.ring_ticks,
                                   capacity_fraction=cfg.train_capacity / cfg.n_nodes,
                                   data_bytes_fixed=data)
        print(f"divjax: largest n that fits on {jax.devices()[0].device_kind} with this "
              f"config: {biggest} (ring {cfg.ring_ticks} slots, "
              f"{cfg.train_capacity / cfg.n_nodes:.0%} of the nodes training at one tick)")
        return 0
    primary = task.primary
    if args.resume is not None:
        out = args.resume
        state, history = checkpoint.restore(out, engine, hp, key=jax.random.key(args.seed))
        print(f"divjax: resuming {out} at simulated t={int(state.t) * cfg.tick_s:g}s "
              f"({len(history)}/{cfg.num_chunks} eval intervals done)")
    else:
        out = args.out or Path("runs") / time.strftime(
            f"%Y%m%d-%H%M%S-{cfg.algorithm}-{task.name}")
    checkpointing = args.checkpoint_every is not None or args.resume is not None
    if checkpointing and args.resume is None:
        checkpoint.save_run_spec(out, cfg, hp, args.seed,
                                 extra={"checkpoint_every_s": args.checkpoint_every})
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
    except KeyboardInterrupt:
        if not checkpointing:
            print("\ndivjax: interrupted (no checkpoint: use --checkpoint-every SECONDS)",
                  file=sys.stderr)
        return 130
    finally:
        if tb is not None:
            tb.close()
    wall = time.perf_counter() - t0
    if not args.quiet and tty:
        print()
    cols = ["time_s", f"{primary}_mean", f"{primary}_min", f"{primary}_max",
            f"{primary}_avgmodel", "consensus", "msgs_delivered", "msgs_dropped"]
    if primary != "loss" and "loss_mean" in metrics:
        cols.insert(5, "loss_mean")
    print(report.format_table(metrics, cols))
    extra = {"seed": args.seed, "wall_s": wall, "jax": jax.__version__,
             "device": jax.devices()[0].device_kind,
             "task_primary": primary}
    if args.resume is not None:
        extra["resumed"] = True
    info = dict(task.info, primary=primary)
    report.write_run_dir(out, cfg, hp, metrics, info, extra)
    final = float(np.asarray(metrics[f"{primary}_mean"])[-1])
    (out / "summary.md").write_text(
        f"# {cfg.algorithm} on {task.name}\n\n"
        f"- n={cfg.n_nodes}, Omega={layout.K}, s={cfg.fanout}, {cfg.n_stragglers} stragglers, "
        f"{cfg.duration_s:g} simulated seconds, seed {args.seed}\n"
        f"- final {primary} (mean over nodes): {final:.4f}\n"
        f"- wall time: {wall:.1f} s on {jax.devices()[0].device_kind}"
        f"{' (this session, resumed from a checkpoint)' if args.resume is not None else ''}\n\n"
        f"```\n{report.format_table(metrics, cols)}\n```\n")
    print(f"divjax: {wall:.1f} s wall; wrote {out}/ (config.json, metrics.json, metrics.csv, "
          f"plot.png, summary.md)")
    return 0


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
