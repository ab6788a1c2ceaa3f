"""The protocol's statistics: per arm its paired differences against supervised-continue (over
pairs and over burn-ins, a bootstrap over test images, per IoU) and the contrasts between two
arms, written as ``summary.json`` with its tables and plot."""

import json
import os
from dataclasses import asdict
from typing import Dict, List, Sequence, Tuple

from ..utils.atomic import atomic_write_json
from .paired import (
    bootstrap_mean_delta_interval,
    cluster_t_interval,
    paired_deltas,
    pairs_needed,
    t_interval,
)
from .protocol_diagnostics import arm_diagnostics, delta_per_iou
from .protocol_settings import ProtocolSettings, load_json, summary_dir
from .protocol_tables import plot_deltas, write_tables

__all__ = [
    "arm_contrasts",
    "carry_bootstraps",
    "check_random_streams",
    "runs_left_out",
    "summarize",
    "write_summary",
]

def _final_ap_file(run: dict) -> str:
    """The evaluator's ``range_ap.json`` of a run's last evaluation (kept in git)."""
    return os.path.join(os.path.dirname(run["predictions"]), "range_ap.json")


def _paired_entry(scores: Dict[tuple, float], reference: Dict[tuple, float]) -> tuple:
    """``(by_pair, entry)``: the paired differences of ``scores`` minus ``reference`` over the
    (split seed, order seed) pairs they share, and their t-interval over pairs and over burn-ins
    (pairs that continue from one burn-in share it)."""
    by_pair = paired_deltas(scores, reference)
    entry = t_interval(list(by_pair.values()))
    entry["by_burn_in"] = cluster_t_interval(by_pair, lambda k: k[0])
    return by_pair, entry


def arm_contrasts(
    scores: Dict[str, Dict[tuple, float]], contrasts: Sequence[Tuple[str, str]]
) -> Dict[str, dict]:
    """``{"<arm> - <reference>": entry}`` for each (arm, reference) of ``contrasts`` whose
    arms share at least one pair in ``scores`` (``{arm: {(split, order): mAP}}``); ``entry`` is
    :func:`_paired_entry`'s, plus ``per_pair`` (``{"split:order": difference}``)."""
    out = {}
    for arm, ref in contrasts:
        if not set(scores.get(arm, {})) & set(scores.get(ref, {})):
            continue
        by_pair, entry = _paired_entry(scores[arm], scores[ref])
        entry["per_pair"] = {f"{k[0]}:{k[1]}": d for k, d in by_pair.items()}
        out[f"{arm} - {ref}"] = entry
    return out


def summarize(runs: List[dict], gates: dict, test_json: str, s: ProtocolSettings) -> dict:
    """``summary.json``: gates, per fraction the arms' mean mAP and their paired differences."""
    from ..evaluation.evaluator import DEFAULT_IOU_THRESHOLDS

    with open(test_json) as f:
        gt = json.load(f)

    out = {"gates": gates, "settings": asdict(s), "fractions": {}}
    for fraction in sorted({r["fraction"] for r in runs}):
        by_arm: Dict[str, Dict[tuple, dict]] = {}
        for r in runs:
            if r["fraction"] == fraction:
                by_arm.setdefault(r["arm"], {})[(r["split_seed"], r["order_seed"])] = r
        arms = {
            a: {
                "mAP": sum(r["mAP"] for r in rs.values()) / len(rs),
                "n": len(rs),
                "pairs": [f"{split}:{order}" for split, order in sorted(rs)],
            }
            for a, rs in by_arm.items()
        }
        for a, rs in by_arm.items():
            # Teacher arms are scored by their teacher; the student is reported beside it.
            student = [r["final"]["models"]["student"]["mAP"] for r in rs.values()
                       if "student" in r.get("final", {}).get("models", {})]  # fmt: skip
            if student:
                arms[a]["student_final_mAP"] = sum(student) / len(student)
        scores = {a: {k: r["mAP"] for k, r in rs.items()} for a, rs in by_arm.items()}
        deltas = {}
        ref = by_arm.get("supervised", {})
        for arm, rs in by_arm.items():
            if arm == "supervised" or not set(rs) & set(ref):
                continue
            by_pair, entry = _paired_entry(scores[arm], scores["supervised"])
            common = list(by_pair)
            if entry["sd"] is not None:  # sizing n from the spread so far
                entry["pairs_for_half_width"] = {
                    "half_width": s.target_half_width,
                    "pairs": pairs_needed(entry["sd"], s.target_half_width),
                }
            # Predictions stay out of git: without them (a fresh checkout) no bootstrap.
            kept = [k for k in common if os.path.isfile(rs[k]["predictions"])]
            kept = [k for k in kept if os.path.isfile(ref[k]["predictions"])]
            if s.bootstrap_samples and kept:
                pairs = [(load_json(rs[k]["predictions"]), load_json(ref[k]["predictions"]))
                         for k in kept]  # fmt: skip
                boot = bootstrap_mean_delta_interval(
                    gt, pairs, DEFAULT_IOU_THRESHOLDS, s.bootstrap_samples
                )
                # Over the test images, of the pairs' last evaluations (their predictions).
                entry["bootstrap"] = {k: boot[k] for k in ("delta", "ci95", "pairs", "samples")}
            entry["final_ap_per_iou"] = delta_per_iou(
                [(_final_ap_file(rs[k]), _final_ap_file(ref[k])) for k in common]
            )
            deltas[arm] = entry
        out["fractions"][f"{fraction:g}"] = {
            "arms": arms,
            "delta_vs_supervised": deltas,
            "contrasts": arm_contrasts(scores, s.contrasts),
            "diagnostics": arm_diagnostics([r for rs in by_arm.values() for r in rs.values()]),
        }
    return out


def check_random_streams(runs: List[dict]) -> None:
    """Refuses a record whose runs trained under different random streams
    (:data:`.protocol.RANDOM_STREAMS`): their paired differences would mix two noise levels
    (under 1 the arms drew different random numbers)."""
    versions = {}
    for r in runs:
        versions.setdefault(r.get("random_streams", 1), []).append(r)
    if len(versions) > 1:
        old = min(versions)
        names = ", ".join(
            f"{r['arm']} (split {r['split_seed']}, order {r['order_seed']})"
            for r in versions[old][:3]
        )
        raise ValueError(
            f"the record mixes stage B runs of random streams {sorted(versions)}: {names}"
            f"{' ...' if len(versions[old]) > 3 else ''} trained under version {old}, other runs "
            f"under {max(versions)}. Summarise them apart: continue with today's code in a new "
            "--output folder (the burn-ins can be copied over), or summarise the old runs with "
            "the code they were trained with"
        )


def runs_left_out(old: dict, new: dict) -> List[str]:
    """What summary ``old`` holds that summary ``new`` does not: per fraction and arm, the
    ``split:order`` pairs it lacks (an arm it lacks altogether, or, for a summary written before
    the arms listed their pairs, one with fewer pairs). Empty when ``new`` covers ``old``."""
    lost = []
    for fraction, block in old.get("fractions", {}).items():
        arms = new.get("fractions", {}).get(fraction, {}).get("arms", {})
        for arm, entry in block.get("arms", {}).items():
            now = arms.get(arm)
            if now is None:
                lost.append(f"{arm} at {fraction}: all {entry['n']} pairs")
            elif "pairs" in entry and "pairs" in now:
                have = set(now["pairs"])
                missing = [p for p in entry["pairs"] if p not in have]
                if missing:
                    lost.append(f"{arm} at {fraction}: {', '.join(missing)}")
            elif entry["n"] > now["n"]:
                lost.append(f"{arm} at {fraction}: {entry['n']} pairs, here {now['n']}")
    return lost


def carry_bootstraps(summary: dict, previous: dict) -> None:
    """Keeps, in ``summary``, the bootstrap intervals of ``previous`` (the summary it replaces)
    that it could not compute: predictions stay out of git, so on a fresh checkout an arm's
    runs made elsewhere have none, and the interval would be lost. A carried entry says so
    (``carried``); it holds the pairs it was computed over (its ``pairs``)."""
    for fraction, block in summary.get("fractions", {}).items():
        before = previous.get("fractions", {}).get(fraction, {}).get("delta_vs_supervised", {})
        for arm, entry in block.get("delta_vs_supervised", {}).items():
            old = before.get(arm, {}).get("bootstrap")
            if old and "bootstrap" not in entry:
                entry["bootstrap"] = dict(old, carried=True)


def write_summary(
    s: ProtocolSettings, runs, gates, test_json: str, out_dir: str, keep_fuller: bool = False
) -> dict:
    """``summary.json``, ``tables.md`` and ``paired_deltas.png`` of ``runs`` under ``gates``.

    ``keep_fuller`` (a call that ran some of a record's pairs): a summary already there that
    holds runs these do not (:func:`runs_left_out`) is left as it is, and this one goes to its
    ``partial/`` folder, with a message saying how to refresh the record's."""
    check_random_streams(runs)
    summary = summarize(runs, gates, test_json, s)
    out_dir = summary_dir(s, out_dir)
    existing = os.path.join(out_dir, "summary.json")
    if keep_fuller and os.path.isfile(existing):
        lost = runs_left_out(load_json(existing), summary)
        if lost:
            partial = os.path.join(out_dir, "partial")
            print(
                f"{existing} summarises runs that this call did not ("
                f"{'; '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}): left as it is; this "
                f"call's summary is in {partial}. To refresh the record's, run the script with "
                "--summarize-only and every split seed, order seed and arm of the record",
                flush=True,
            )
            out_dir = partial
    here = os.path.join(out_dir, "summary.json")
    if os.path.isfile(here):
        carry_bootstraps(summary, load_json(here))
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(here, summary)
    write_tables(summary, out_dir)
    plotted = plot_deltas(summary, out_dir)
    plot = ", paired_deltas.png" if plotted else " (no plot: no arm has supervised-continue pairs)"
    print(f"wrote {out_dir}/summary.json, tables.md{plot}", flush=True)
    return summary
