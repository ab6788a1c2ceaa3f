"""``tables.md`` and ``paired_deltas.png`` of a protocol summary (:mod:`.protocol_summary`)."""

import os
from typing import List

from ..utils.atomic import atomic_write_text
from .protocol_diagnostics import DIAGNOSTIC_KEYS

__all__ = ["plot_deltas", "write_tables"]

def _fmt(entry: dict, unit: str = "") -> str:
    lo, hi = entry["ci95"]
    if lo is None:
        return f"{entry['mean']:+.2f} [no interval from one pair] (1)"
    return f"{entry['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({entry['n']}{unit})"


def _fmt_burn_ins(entry: dict) -> str:
    b = entry.get("by_burn_in")
    return _fmt(b, " burn-ins") if b and b["ci95"][0] is not None else ""


def _fmt_boot(entry: dict) -> str:
    b = entry.get("bootstrap")
    if not b:
        return ""
    lo, hi = b["ci95"]
    carried = ", from an earlier summary" if b.get("carried") else ""
    return f"{b['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({b['pairs']}{carried})"


def _contrasts_table(block: dict) -> List[str]:
    """The ``contrasts`` of one fraction: each difference between two arms, per pair too."""
    contrasts = block.get("contrasts") or {}
    if not contrasts:
        return []
    lines = ["", "| arm - reference | mean [95 % t] (pairs) | the same over burn-ins "
             "| per pair (split:order difference) |", "|---|---|---|---|"]  # fmt: skip
    for name, d in contrasts.items():
        pairs = ", ".join(f"{k} {v:+.2f}" for k, v in d["per_pair"].items())
        lines.append(f"| {name} | {_fmt(d)} | {_fmt_burn_ins(d)} | {pairs} |")
    return lines


def _diagnostics_table(block: dict) -> List[str]:
    """Per arm: the final predictions' AP difference at IoU 0.1 / 0.5 / 0.7 and the runs'
    diagnostics (means over the arm's runs; blank where not logged)."""
    names = list(DIAGNOSTIC_KEYS)
    lines = ["", "| arm | dAP@0.1 | dAP@0.5 | dAP@0.7 | " + " | ".join(names) + " |"]
    lines.append("|---" * (4 + len(names)) + "|")
    diag = block.get("diagnostics", {})
    for arm in block["arms"]:
        d = block["delta_vs_supervised"].get(arm, {}).get("final_ap_per_iou", {})
        ious = [d.get(k) for k in ("0.10", "0.50", "0.70")]
        cells = [f"{v:+.2f}" if v is not None else "" for v in ious]
        cells += [f"{diag.get(arm, {})[n]:.3g}" if n in diag.get(arm, {}) else "" for n in names]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def write_tables(summary: dict, out_dir: str) -> None:
    """``tables.md``: gates, then per fraction each arm's mAP and paired difference."""
    g = summary["gates"]
    lines = ["# Two-stage protocol", "", "## Gates", ""]
    lines += [f"- {k}: {v}" for k, v in g.items() if k not in ("messages", "burn_ins")]
    lines += [f"- **{m}**" for m in g.get("messages", [])]
    if g.get("burn_ins"):
        lines += ["", "| burn-in | iterations | lr drops at | BN statistics | val patches | "
                  "max - min over last fifth | final val mAP |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for b in g["burn_ins"]:
            move = "" if b["move_last_fifth"] is None else f"{b['move_last_fifth']:.2f}"
            steps = ", ".join(map(str, b.get("lr_steps") or []))
            n = b.get("precise_bn_iters")
            stats = f"precise ({n} batches)" if n else "running"
            lines.append(
                f"| {b['fraction'] * 100:g} %, split {b['split_seed']} | {b['iterations']} | "
                f"{steps} | {stats} | {b['val_images']} | {move} | {b['final_val_mAP']:.2f} |"
            )
    split = summary.get("settings", {}).get("score_split", "test")
    for fraction, block in summary["fractions"].items():
        lines += ["", f"## {float(fraction) * 100:g} % labelled (scored on {split})", ""]
        lines += [
            "| arm | mAP (mean over pairs) | delta vs supervised: mean [95 % t] (n) "
            "| the same over burn-ins (each burn-in's mean of its pairs) "
            "| pairs for a +-half-width t-interval at this spread "
            f"| last evaluation: delta [95 % bootstrap over {split} images] (pairs) "
            "| student at the end (teacher arms) |"
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for arm, a in block["arms"].items():
            d = block["delta_vs_supervised"].get(arm) or {}
            size = d.get("pairs_for_half_width")
            size = f"{size['pairs']} for +-{size['half_width']:g}" if size else ""
            delta = _fmt(d) if d else ("reference" if arm == "supervised" else "no paired run")
            student = f"{a['student_final_mAP']:.2f}" if "student_final_mAP" in a else ""
            lines.append(
                f"| {arm} | {a['mAP']:.2f} | {delta} | {_fmt_burn_ins(d)} | {size} "
                f"| {_fmt_boot(d)} | {student} |"
            )
        lines += _contrasts_table(block)
        lines += _diagnostics_table(block)
    atomic_write_text(os.path.join(out_dir, "tables.md"), "\n".join(lines) + "\n")


def plot_deltas(summary: dict, out_dir: str) -> bool:
    """``paired_deltas.png``: each arm's mean paired difference with its 95 % interval; False
    (nothing written) when no arm has one (e.g. a val search point without supervised runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"{a} ({float(fr) * 100:g} %)", d)
        for fr, block in summary["fractions"].items()
        for a, d in block["delta_vs_supervised"].items()
    ]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(rows) + 1))
    for i, (_, d) in enumerate(rows):
        lo, hi = d["ci95"]
        if lo is not None:
            ax.plot([lo, hi], [i, i], color="tab:blue")
        ax.plot([d["mean"]], [i], "o", color="tab:blue")
    ax.axvline(0.0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.set_xlabel("mAP[.1:.7] difference vs supervised-continue (95 % t interval)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "paired_deltas.png"), dpi=120)
    plt.close(fig)
    return True
