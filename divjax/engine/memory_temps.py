"""XLA's temporaries in the memory model: the peak of a run's intermediates, from its jaxpr.

A compiled eval interval holds, besides its arguments (the donated state, the HParams) and its
outputs (the new state, in the donated buffers), temporaries: the keys of every node's local
steps, the gathered and trained models, gradients and activations, the fragments drawn and sent,
the scatter operands, the evaluation's per-node metrics, and copies XLA makes of loop-carried
state. For the least-squares task they are 6.1 KB per node, against the 1.9 KB of training
buffers the hand-made "training" part counted (issue 33), so the model was below XLA's figure.

How they are counted (`interval_temporaries`), without compiling (a compile of the engine takes
5-20 s on 2 cores at any n, and the dry run must answer in seconds at a million nodes):
1. the engine's `advance` (the ticks of one eval interval, then the evaluation: the program
   `simulate` compiles) is traced to a jaxpr on the abstract state (`jax.make_jaxpr`: nothing
   allocated; 0.1-2 s at any n), and `peak_bytes` walks it in program order: an equation's
   outputs are allocated when it runs and freed after their last use; an output may take over
   the buffer of an input that dies there and has its size (an in-place update, as XLA does);
   a loop's carry and a donated argument are such inputs; a reshape is a view of its operand
   and a broadcast or iota is computed inside the fusion that reads it (no buffer); a loop, a
   branch or a call adds the peak of its body; and a few primitives hold buffers their
   lowering hides while they run (`HIDDEN`: threefry's, a convolution's).
2. plus CARRY_COPIES = 1 copy of the engine's own state (models, optimizer, rings, counters; not
   the algorithm's own arrays): XLA copies loop-carried arrays it cannot update in place across
   the tick loop and the branch that skips idle ticks (its buffer reports show two copies of
   the models, four of AD-PSGD's counter ring), which the jaxpr does not show.
Checked against XLA's `memory_analysis` of the compiled interval (arguments + outputs +
temporaries - donated; the task's arrays are embedded constants there, so the model is taken
without its data): all six built-in algorithms on the least-squares task, the default preset at
64 and 256 nodes and a small config at 16 and 48 (24 programs): the model's total is
1.01-1.42x XLA's figure; the matrix-factorisation task (DivShare, Epidemic, AD-PSGD) 1.00-1.67x
(its rings of whole-model fragments are counted as copied, XLA does not copy them); GN-LeNet
(CIFAR-10) 1.25x at 8 DivShare nodes, 1.32x at 16 Epidemic (a convolution's hidden buffers at
1x its output gave 0.99x and 1.09x: 2x is the smallest whole factor at or above). The walk alone was 0.28-1.13x XLA's temporaries: neither
part is enough without the other. tests/test_memory_temps.py keeps the check for every
algorithm at two sizes and for matrix factorisation (GN-LeNet's compile takes over a minute).

Why the model stays linear in n (`memory_scale.largest_n` scales the traced figure per node):
every array of the interval has a leading axis of n nodes, of the C training (gathered) nodes,
of an iteration chunk, or no node axis, and no two node axes (tests/test_linear_state.py); with
C a fixed share of n the peak grows in proportion to n (measured: XLA's temporaries per node
6,309, 6,227, 6,186, 6,166 bytes at 64, 128, 256, 512 DivShare nodes; at 1,048,576 nodes XLA's
whole figure, 13.2 KB per node, matched the measured peak within 5%). A fixed chunk only makes
the per-node figure an overestimate at larger n.

Not counted here: what XLA's runtime and the compiler hold outside the program's buffers, and
task arrays a jitted program embeds as constants, which `memory.memory_model` counts apart
("constants": 2x the task's data while JAX embeds them).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

# buffers a primitive's lowering holds while it runs, per byte of its output, that the jaxpr
# does not show: threefry's uint32 halves and counters (XLA's buffer report: per key array, a
# transposed copy and 4-5 half-size arrays), a convolution's relaid-out operand and output
HIDDEN = {"random_split": 2, "random_bits": 2, "random_fold_in": 2, "threefry2x32": 2,
          "conv_general_dilated": 2}
# a new shape of the same bytes: XLA makes it a bitcast of its operand (no buffer)
VIEW_PRIMITIVES = ("reshape", "squeeze", "expand_dims")
# computed inside the fusion that reads it: XLA never gives it a buffer of its own
FUSED_PRIMITIVES = ("broadcast_in_dim", "iota")
CARRY_COPIES = 1      # copies of the engine's state XLA may hold (loop and branch carries)


def aval_bytes(aval: Any) -> int:
    """Bytes of one abstract value (a typed PRNG key: two uint32; a token: 0)."""
    if not hasattr(aval, "shape") or not hasattr(aval, "dtype"):
        return 0
    if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.prng_key):
        item = 8
    else:
        try:
            item = np.dtype(aval.dtype).itemsize
        except TypeError:
            item = 4
    return int(np.prod(aval.shape, dtype=np.int64)) * item


def _jaxpr(x: Any):
    if hasattr(x, "eqns"):
        return x
    inner = getattr(x, "jaxpr", None)
    return inner if hasattr(inner, "eqns") else None


def _is_var(v: Any) -> bool:
    return not hasattr(v, "val")   # a Literal has .val


def sub_calls(eqn: Any, dying: set) -> list:
    """(jaxpr, reusable flags of its invars) of every body an equation runs: a while loop's
    and a scan's carry may be updated in place; a branch's or a call's operand only when it
    dies at this equation (`dying`)."""
    p, name = eqn.params, eqn.primitive.name
    gone = [_is_var(v) and v in dying for v in eqn.invars]
    if name == "while":
        body, cond = _jaxpr(p["body_jaxpr"]), _jaxpr(p["cond_jaxpr"])
        consts = p["body_nconsts"]
        carry = len(body.invars) - consts
        return [(body, [False] * consts + [True] * carry), (cond, [False] * len(cond.invars))]
    if name == "scan":
        body = _jaxpr(p["jaxpr"])
        consts, carry = p["num_consts"], p["num_carry"]
        return [(body, [False] * consts + [True] * carry
                 + [False] * (len(body.invars) - consts - carry))]
    if name == "cond":   # invars: the branch index, then the operands
        return [(_jaxpr(b), gone[1:]) for b in p["branches"]]
    calls = []
    for value in p.values():
        for x in value if isinstance(value, tuple | list) else (value,):
            body = _jaxpr(x)
            if body is not None:
                same = len(body.invars) == len(gone)
                calls.append((body, gone if same else [False] * len(body.invars)))
    return calls


def _last_uses(jaxpr: Any) -> dict:
    """{var: index of the last equation that reads it} (len(eqns): an output); a view's
    operand lives as long as the view (`VIEW_PRIMITIVES`)."""
    last = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if _is_var(v):
                last[v] = i
    for v in jaxpr.outvars:
        if _is_var(v):
            last[v] = len(jaxpr.eqns)
    for eqn in reversed(jaxpr.eqns):   # (a fused broadcast reads its operand where it is used)
        if (eqn.primitive.name in VIEW_PRIMITIVES + ("broadcast_in_dim",) and eqn.invars
                and _is_var(eqn.invars[0])):
            src, view = eqn.invars[0], eqn.outvars[0]
            last[src] = max(last.get(src, -1), last.get(view, -1))
    return last


def _owned_bytes(eqn: Any, o: Any) -> int:
    """Bytes of a buffer of its own that output `o` of `eqn` needs (0: a view or fused)."""
    if eqn.primitive.name in VIEW_PRIMITIVES + FUSED_PRIMITIVES:
        return 0
    return aval_bytes(o.aval)


def _new_bytes(eqn: Any, free: list) -> int:
    """Bytes an equation allocates: its outputs, less those that take a dying input's buffer
    of the same size, plus the buffers its lowering hides (`HIDDEN`)."""
    free, new = sorted(free), 0
    for o in eqn.outvars:
        b = _owned_bytes(eqn, o)
        if not b:
            continue
        if b in free:
            free.remove(b)
        else:
            new += b
    new += HIDDEN.get(eqn.primitive.name, 0) * sum(aval_bytes(o.aval) for o in eqn.outvars)
    return new


def peak_bytes(jaxpr: Any, reusable: list | None = None) -> int:
    """Peak bytes live at once beyond the jaxpr's inputs (intermediates and outputs), walking
    its equations in order; inputs flagged `reusable` (donated, a loop's carry) are freed after
    their last use, so their buffers can be taken over."""
    reusable = list(reusable) if reusable is not None else [False] * len(jaxpr.invars)
    last = _last_uses(jaxpr)
    live = {v: aval_bytes(v.aval) for v, r in zip(jaxpr.invars, reusable, strict=True)
            if r and v in last}
    base = sum(aval_bytes(v.aval) for v, r in zip(jaxpr.invars, reusable, strict=True) if r)
    cur = best = sum(live.values())
    dies_at = {}
    for v, i in last.items():
        dies_at.setdefault(i, []).append(v)
    for i, eqn in enumerate(jaxpr.eqns):
        dying = [v for v in dies_at.get(i, ()) if v in live]
        inner = max((peak_bytes(body, flags) for body, flags in sub_calls(eqn, set(dying))),
                    default=0)
        best = max(best, cur + max(inner, _new_bytes(eqn, [live[v] for v in dying])))
        for o in eqn.outvars:
            if last.get(o, -1) > i:
                live[o] = _owned_bytes(eqn, o)
                cur += live[o]
        for v in dying:
            cur -= live.pop(v)
    return max(0, best - base)


def interval_temporaries(engine: Any, hp: Any = None) -> int:
    """Bytes of temporaries of one compiled eval interval (`engine.advance`, state donated):
    the peak of its jaxpr's intermediates (`peak_bytes`) plus CARRY_COPIES of the engine's
    state without the algorithm's own arrays. Traced on abstract values: nothing is allocated
    or compiled."""
    from divjax.config import default_hparams
    from divjax.engine.memory import state_part_bytes

    hp = default_hparams(engine.cfg) if hp is None else hp
    state = jax.eval_shape(engine.init, jax.random.key(0), hp)
    closed = jax.make_jaxpr(engine.advance)(state, hp)
    donated = [True] * len(jax.tree.leaves(state)) + [False] * len(jax.tree.leaves(hp))
    parts = state_part_bytes(state)
    carried = sum(parts.values()) - parts["algorithm"]
    return int(peak_bytes(closed.jaxpr, donated) + CARRY_COPIES * carried)
