"""The document's section on download limits (issue 18)."""

from __future__ import annotations

from divjax.reproduction.configs import BASELINES
from divjax.reproduction.text import NAMES, fmt_ci, speed_text, table


def downloads_section(res: dict, cmd: str) -> list[str]:
    """The document's section on download limits (from `downloads_effect`)."""
    L = ["## With download limits (issue 18)", "",
         "The main comparisons' settings with the authors' testbed shaping both directions of "
         "every link (every node's download bandwidth equals its upload: 60 Mbit/s, the 7 "
         "stragglers 10-13). Downloads are first-come-first-served queues on the link clock "
         "(`divjax/network/downloads.py`); senders are not slowed by a busy receiver. DivShare: a "
         "fragment not received by the sender's next iteration end (plus the latency) is "
         "lost, as the authors' linger = 0 connections lose it. Swift and AD-PSGD drop "
         "nothing: a model waits on the download link as long as it takes (AD-PSGD answers a "
         "ping when it has been received, so its pongs wait too).", ""]
    names = {"divshare": "DivShare without limits"}
    for b in BASELINES:
        names[f"{b}-limits"] = f"**{NAMES[b]} with limits** (the comparison with limits on)"
        names[b] = f"{NAMES[b]} without limits"
    for task, part, metric in (("movielens", "downloads", "RMSE"),
                               ("cifar10", "cifar-downloads", "accuracy")):
        d = res.get("downloads", {}).get(task)
        L += [f"### {'MovieLens' if task == 'movielens' else 'CIFAR-10'}", ""]
        if not d:
            L += [f"No cells yet: `{cmd} --parts {part}`.", ""]
            continue
        L += [f"{d['seeds']} seeds; `{cmd} --parts {part}`. DivShare's fragments lost on "
              f"download links: {fmt_ci(d['lost_pct'], '%', 3)} of those sent.", ""]
        rows = []
        for b in [f"{x}-limits" for x in BASELINES] + ["divshare"] + list(BASELINES):
            r = d["gain"].get(b)
            if r is None:
                continue
            sp = "; ".join(f"{metric} {y:g}: {speed_text(d['speedup'][(b, y)])}"
                           for (bb, y) in d["speedup"] if bb == b)
            rows.append([names[b], fmt_ci(r, "%"), r["verdict"], sp])
        L += [table(rows, ["DivShare with limits against", f"final {metric} gain, % "
                           "(positive = DivShare with limits better)", "verdict",
                           "speedup to target (x)"]), ""]
        g = d["gain"].get("divshare")
        same = [s for s in d["identical_to_main"] if d["identical_to_main"][s]]
        if g and len(same) == len(d["identical_to_main"]):
            L += ["What the limits change for DivShare: nothing. Every seed's curve is "
                  "identical to its run without limits (every metric at every evaluation; no "
                  "fragment lost): in this setting the download links are never busy enough "
                  "to move a delivery into another inbox window.", ""]
        elif g:
            effect = ("download limits change DivShare's final " + metric + " by an amount the "
                      "seeds do not establish" if g["verdict"].startswith("not established")
                      else f"download limits make DivShare's final {metric} "
                      f"{'better' if g['mean'] > 0 else 'worse'} ({fmt_ci(g, '%')}, "
                      f"{g['verdict']} as an effect)")
            why = (". Fewer fragments are averaged in when download links lose some; on this "
                   "matrix factorisation less averaging means less dilution of the user rows "
                   "(the MovieLens section): a plausible cause of the better RMSE, which this "
                   "grid does not test further" if task == "movielens" and g["mean"] > 0
                   and g["verdict"] == "holds" else "")
            L += ["What the limits change for DivShare: " + effect + why + ".", ""]
        for b, se in d["effect"].items():
            shown = se["verdict"] in ("holds", "opposite")
            L += [f"What they change for {NAMES[b]}: " + (
                "nothing (every seed's curve is identical to its run without limits)."
                if d["identical"][b] else
                f"its final {metric} is " + (
                    f"{'better' if se['verdict'] == 'holds' else 'worse'} with limits "
                    f"({fmt_ci(se, '%')}, positive = better; the 95% interval excludes zero)"
                    "; a plausible cause, not tested here: its models wait on the "
                    "stragglers' download links, so those nodes average in older models."
                    if shown else
                    f"changed by an amount the seeds do not establish ({fmt_ci(se, '%')}), "
                    "though its curves differ from the runs without limits.")), ""]
        verdicts = []
        for b in BASELINES:
            gs, g0 = d["gain"].get(f"{b}-limits"), d["neither"].get(b)
            if gs and g0:
                verdicts.append(
                    f"against {NAMES[b]}, DivShare's final {metric} gain is {fmt_ci(g0, '%')} "
                    f"({g0['verdict']}) with neither limited and {fmt_ci(gs, '%')} "
                    f"({gs['verdict']}) with both limited: "
                    + ("the same verdict" if gs["verdict"] == g0["verdict"]
                       else "**the verdict changes**"))
        if verdicts:
            text = "; ".join(verdicts)
            L += ["Does the conclusion change? " + text[0].upper() + text[1:] + ".", ""]
    return L
