"""The CIFAR-10 Omega ablation (part `cifar-omega`) in the document: its analysis (the gains
paired by seed, node mean and average model, the copies averaged per fragment, the messages
dropped, the missing cells), its section, figure and first-screen line."""

from __future__ import annotations

from divjax.reproduction.analysis import copies_averaged, dropped_share
from divjax.reproduction.cifar_omega import (
    CIFAR_OMEGA_MAP,
    CIFAR_OMEGA_MAP_K,
    CIFAR_OMEGAS,
    SEEDS,
    omega_regime,
)
from divjax.reproduction.figures import plot_cifar_omega
from divjax.reproduction.text import commits_text, fmt_ci, table
from divjax.frontends.stats import final, gain, mean_ci


def omega_rows(idx: dict, setting: str, ks) -> dict:
    """Per Omega with cells: final accuracy (%, node mean and average model), DivShare's gains
    over Swift and AD-PSGD (the setting's own cells: `cifar` part's main or the cifar-map
    regime's) and over Omega 1, each for both measures, paired by seed; copies averaged per
    fragment; messages dropped."""
    base = "main" if setting == "main" else setting
    swift = idx.get(("cifar10", base, "swift"), {})
    adpsgd = idx.get(("cifar10", base, "adpsgd"), {})
    one = idx.get(("cifar10", omega_regime(setting, 1), "divshare"), {})
    rows = {}
    for k in ks:
        d = idx.get(("cifar10", omega_regime(setting, k), "divshare"), {})
        if not d:
            continue
        row = {"seeds": len(d), "commit": commits_text(d.values()),
               "copies": mean_ci([copies_averaged(c) for c in d.values()]),
               "dropped": mean_ci([dropped_share(c) for c in d.values()])}
        for suffix, key in (("", "acc_mean"), ("_avg", "acc_avgmodel")):
            row["final" + suffix] = mean_ci([100 * final(c, key) for c in d.values()])
            for name, b in (("swift", swift), ("adpsgd", adpsgd), ("omega1", one)):
                ok = b and set(b) & set(d) and not (name == "omega1" and k == 1)
                row[f"gain_{name}{suffix}"] = gain(d, b, key) if ok else None
        rows[k] = row
    return rows


def baseline_summary(cells: dict) -> dict | None:
    if not cells:
        return None
    return {"final": mean_ci([100 * final(c) for c in cells.values()]),
            "final_avg": mean_ci([100 * final(c, "acc_avgmodel") for c in cells.values()]),
            "copies": mean_ci([copies_averaged(c) for c in cells.values()]),
            "seeds": sorted(cells), "commit": commits_text(cells.values())}


def rerun_check(ours: dict, theirs: dict) -> dict | None:
    """The part's Omega 8 cells against the other part's DivShare cells (the same config at
    another commit), per shared seed: the largest |difference| of final node-mean accuracy
    (pp) and whether the message counts are equal."""
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return None
    keys = ("msgs_sent", "msgs_delivered", "msgs_dropped", "msgs_replaced")
    return {"seeds": seeds, "commit": commits_text(theirs[s] for s in seeds),
            "max_pp": max(abs(100 * (final(ours[s]) - final(theirs[s]))) for s in seeds),
            "same_msgs": all(ours[s]["curve"][k] == theirs[s]["curve"][k] for s in seeds
                             for k in keys)}


def cifar_omega(idx: dict, seeds=SEEDS) -> dict:
    """The part's analysis: per setting ("main", CIFAR_OMEGA_MAP) its rows (`omega_rows`) and
    the Swift and AD-PSGD cells they are paired with; the missing cells; "any" when a row exists."""
    out: dict = {"settings": {}, "missing": []}
    for setting, ks in (("main", CIFAR_OMEGAS), (CIFAR_OMEGA_MAP, CIFAR_OMEGA_MAP_K)):
        base = "main" if setting == "main" else setting
        out["missing"] += [f"{omega_regime(setting, k)}/divshare-seed{s}" for k in ks
                           for s in seeds
                           if s not in idx.get(("cifar10", omega_regime(setting, k),
                                                "divshare"), {})]
        out["settings"][setting] = {
            "rows": omega_rows(idx, setting, ks), "ks": ks,
            "swift": baseline_summary(idx.get(("cifar10", base, "swift"), {})),
            "adpsgd": baseline_summary(idx.get(("cifar10", base, "adpsgd"), {})),
            "rerun": rerun_check(idx.get(("cifar10", omega_regime(setting, 8), "divshare"), {}),
                                 idx.get(("cifar10", base, "divshare"), {}))}
    out["any"] = any(s["rows"] for s in out["settings"].values())
    return out


def cached(res: dict) -> dict:
    """res["cifar_omega"], computed once from res["idx"] (the analysis does not hold it)."""
    if "cifar_omega" not in res:
        res["cifar_omega"] = cifar_omega(res.get("idx") or {})
    return res["cifar_omega"]


BASE_TEXT = {"main": "the `cifar` part's main cells", CIFAR_OMEGA_MAP: f"the `cifar-map` part's "
             f"{CIFAR_OMEGA_MAP} cells"}
SETTING_TEXT = {"main": "main setting (compute 5 s per iteration, no link saturated)",
                CIFAR_OMEGA_MAP: f"straggler-bound regime {CIFAR_OMEGA_MAP} (compute 0.1x the "
                                 "fast send time, 7 stragglers)"}


def verdict_text(r: dict | None) -> str:
    return f"{fmt_ci(r, '%')} ({r['verdict']})" if r else "-"


def omega_table(st: dict) -> str:
    rows = []
    for k, r in sorted(st["rows"].items()):
        rows.append([k, r["seeds"], fmt_ci(r["final"], "%", 3), fmt_ci(r["final_avg"], "%", 3),
                     verdict_text(r["gain_omega1"]), verdict_text(r["gain_omega1_avg"]),
                     verdict_text(r["gain_swift"]), verdict_text(r["gain_swift_avg"]),
                     verdict_text(r["gain_adpsgd"]), fmt_ci(r["copies"], "", 3),
                     fmt_ci(r["dropped"], "%", 3), r["commit"]])
    return table(rows, ["Omega", "seeds", "final accuracy (node mean)",
                        "final accuracy (average model)", "gain over Omega 1 (node mean)",
                        "gain over Omega 1 (average model)", "gain over Swift (node mean)",
                        "gain over Swift (average model)", "gain over AD-PSGD (node mean)",
                        "copies per fragment", "messages dropped", "commit"])


def baseline_lines(st: dict, setting: str) -> list[str]:
    out = []
    for name, b in (("Swift", st["swift"]), ("AD-PSGD", st["adpsgd"])):
        if b:
            out.append(f"{name} ({BASE_TEXT[setting]}, seeds {', '.join(map(str, b['seeds']))},"
                       f" commit {b['commit']}): final accuracy {fmt_ci(b['final'], '%', 3)} "
                       f"(node mean), {fmt_ci(b['final_avg'], '%', 3)} (average model), "
                       f"{fmt_ci(b['copies'], '', 3)} copies per fragment.")
    return [" ".join(out), ""] if out else [f"No Swift or AD-PSGD cells of {BASE_TEXT[setting]} "
                                            "yet: the gains over them are missing.", ""]


def rerun_lines(st: dict, setting: str) -> list[str]:
    r = st["rerun"]
    if not r:
        return []
    return [f"Omega 8 rerun in this part against the DivShare ones of {BASE_TEXT[setting]} "
            f"(the same config, commit {r['commit']}; seeds "
            f"{', '.join(map(str, r['seeds']))}): message counts "
            f"{'equal' if r['same_msgs'] else 'differ'}, final node-mean accuracy "
            + (f"differs by at most {r['max_pp']:.2g} pp per seed" if r["max_pp"] else
               "identical") + "; the gains pair cells of one commit.", ""]


def gains_lines(st: dict, high: int = 8) -> list[str]:
    """The two mechanisms' paired gains, node mean and average model, with their verdicts;
    the Omegas at which no message was ever delivered (every one dropped by the replaced queue:
    DivShare there trains alone)."""
    r1, rk = st["rows"].get(1), st["rows"].get(high)
    alone = [k for k, r in sorted(st["rows"].items()) if r["copies"]["mean"] == 0]
    L = [f"At Omega {', '.join(map(str, alone))} no message was delivered in any seed run "
         "(every one dropped by the replaced queue, one still on the wire included, as in the "
         "authors' code): DivShare there "
         "trains each node alone, so its gains over Swift there are those of no communication "
         "over stale communication.", ""] if alone else []
    if r1 and r1["gain_swift"]:
        L += [f"**Queue replacement** (DivShare at Omega 1 against Swift, whole models both): "
              f"node mean {verdict_text(r1['gain_swift'])}, average model "
              f"{verdict_text(r1['gain_swift_avg'])}.", ""]
    if rk and rk["gain_omega1"]:
        L += [f"**Fragmentation** (Omega {high} against Omega 1, both with replaced queues): "
              f"node mean {verdict_text(rk['gain_omega1'])}, average model "
              f"{verdict_text(rk['gain_omega1_avg'])}.", ""]
    return L


def cifar_omega_section(res: dict, out, rel, cmd: str) -> list[str]:
    """The CIFAR-10 Omega ablation's section: per setting a table, the baselines it is paired
    with, the two mechanisms' gains; one figure; the missing cells."""
    co = cached(res)
    L = ["## Which mechanism carries the gain on CIFAR-10: the Omega ablation", ""]
    if not co["any"]:
        return L + [f"No cells yet: `{cmd} --parts cifar-omega` runs all "
                    f"{len(co['missing'])} ({', '.join(co['missing'])}), so which mechanism "
                    "carries the gain on CIFAR-10 is not established.", ""]
    png = out / "cifar10_omega.png"
    plot_cifar_omega(co, png)
    L += ["DivShare on the `cifar` part's shortened setting (60 nodes, GN-LeNet, 8 local "
          "steps, 24 iterations) at Omega in {" + ", ".join(map(str, CIFAR_OMEGAS)) + "}, and "
          f"in the `cifar-map` part's straggler-bound regime {CIFAR_OMEGA_MAP} at Omega in "
          "{" + ", ".join(map(str, CIFAR_OMEGA_MAP_K)) + "}, every DivShare cell of the part "
          f"at the commit in its row, Omega 8 rerun there (`{cmd} --parts cifar-omega`). "
          "Omega = 1 sends whole models, as Swift does, but replaces its queue where Swift "
          "appends: Omega 1 against Swift isolates queue replacement, Omega > 1 against "
          "Omega 1 fragmentation. Swift and AD-PSGD are the cells of the `cifar` part (main) "
          f"and of the `cifar-map` part ({CIFAR_OMEGA_MAP}), made at other commits (named "
          "below). Gains are relative final-accuracy gains in %, paired by seed "
          "(`divjax.frontends.stats.gain`), for the node mean and for the average model; "
          "**holds** / **opposite** only when the 95% interval excludes 0, else **not "
          "established**. Copies per fragment: received copies averaged into each fragment "
          "per aggregation (delivered and not replaced, per node-iteration and fragment: the "
          "dilution confound); messages dropped: by the replaced queue, in % of those queued.",
          "", f"![CIFAR-10 Omega ablation]({rel(png)})", ""]
    for setting, st in co["settings"].items():
        L += [f"### {SETTING_TEXT[setting][0].upper() + SETTING_TEXT[setting][1:]}", ""]
        if not st["rows"]:
            L += ["No cells yet.", ""]
            continue
        L += [omega_table(st), "", *baseline_lines(st, setting), *rerun_lines(st, setting),
              *gains_lines(st)]
    if co["missing"]:
        total = sum(len(s["ks"]) for s in co["settings"].values()) * len(SEEDS)
        L += [f"Missing ({len(co['missing'])} of {total}): " + ", ".join(co["missing"])
              + ".", ""]
    return L


def cifar_omega_summary(res: dict) -> str:
    """One line for the first screen's "Which mechanism" bullet."""
    co = cached(res)
    if not co["any"]:
        return ("CIFAR-10: no Omega-ablation cells yet (`--parts cifar-omega`), so which "
                "mechanism carries the gain there is not established.")
    parts = []
    for setting, st in co["settings"].items():
        r1, r8 = st["rows"].get(1), st["rows"].get(8)
        g = []
        if r1 and r1["gain_swift"]:
            g.append(f"queue replacement (Omega 1 vs Swift) {verdict_text(r1['gain_swift'])}, "
                     f"average model {verdict_text(r1['gain_swift_avg'])}")
        if r8 and r8["gain_omega1"]:
            g.append(f"fragmentation (Omega 8 vs 1) {verdict_text(r8['gain_omega1'])}, "
                     f"average model {verdict_text(r8['gain_omega1_avg'])}")
        if g:
            parts.append(("main setting" if setting == "main" else setting) + ": "
                         + "; ".join(g))
    miss = len(co["missing"])
    return ("CIFAR-10 (final accuracy gain, node mean): " + (" / ".join(parts) or
                                                             "no paired gain yet")
            + (f" ({miss} cells missing)" if miss else "") + ".")


def cifar_omega_front_row(res: dict, where: str) -> list[str]:
    """The README / front page row: the main setting's two mechanisms on CIFAR-10 (node mean and
    average model), from the part's cells; none until Omega 1 and 8 both have cells."""
    rows = cached(res)["settings"]["main"]["rows"]
    r1, r8 = rows.get(1), rows.get(8)
    if not (r1 and r8 and r1["gain_swift"] and r8["gain_omega1"]):
        return []
    return [f"| why DivShare wins on CIFAR-10 (Omega ablation, {r8['seeds']} seeds) | main "
            f"setting, final accuracy (node mean; average model): fragmenting (Omega 8 vs 1) "
            f"{verdict_text(r8['gain_omega1'])}; {verdict_text(r8['gain_omega1_avg'])}; "
            f"replacing the send queue (Omega 1 vs Swift) {verdict_text(r1['gain_swift'])}; "
            f"{verdict_text(r1['gain_swift_avg'])} | {where} |"]
