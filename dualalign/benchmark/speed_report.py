"""The speed benchmark's headline ratios (median of per-round ratios) and its Markdown report."""

import json

from .interleave import ratio_summary
from .settings import SWITCH_STEP_KEYS

__all__ = ["HEADLINE_STEPS", "headline_ratios", "markdown"]

# headline key: (numerator step, denominator step); each a ratio of seconds per step.
HEADLINE_STEPS = {
    "step_ratio_vs_supervised_same_images": ("c_dualalign", "b_supervised_same_images"),
    "step_ratio_vs_mean_teacher": ("c_dualalign", "e_mean_teacher"),
    "step_ratio_vs_backbone_only_same_images": ("c_dualalign", "b0_backbone_only_same_images"),
    # the teacher pipeline's switches together, against the paper's method (target <= 1.3)
    "teacher_pipeline_step_ratio_vs_dualalign": ("g_dualalign_teacher", "c_dualalign"),
    "self_training_step_ratio_vs_dualalign": ("f_self_training", "c_dualalign"),
    # each switch on its own (h_switch_<name>: "<name>_step_ratio_vs_dualalign"; target <= 1.3)
    **{
        f"{key[len('h_switch_'):]}_step_ratio_vs_dualalign": (key, "c_dualalign")
        for key in SWITCH_STEP_KEYS
    },
    "step_ratio_vs_supervised_same_images_amp": (
        "c_dualalign_amp",
        "b_supervised_same_images_amp",
    ),
}


def headline_ratios(steps: dict, inference: dict) -> dict:
    """Every headline ratio as :func:`ratio_summary` of its per-round ratios.

    Args:
        steps: ``measure_steps``' output (``"s_per_round"`` of each step).
        inference: ``measure_inference``' output (``"<inputs>_s_per_round"``).

    Returns:
        ``{key: {"median", "q25", "q75", "min", "max", "rounds"}}``. Step ratios are of seconds
        (above 1: dual alignment is slower); inference ratios are of images per second (below 1:
        dual alignment is slower), so per round the plain detector's seconds over dual's.
    """
    out = {}
    for key, (num, den) in HEADLINE_STEPS.items():
        if num in steps and den in steps:
            out[key] = ratio_summary(steps[num]["s_per_round"], steps[den]["s_per_round"])
    for key, what in (("infer_ratio_vs_plain", "patches"), ("infer_ratio_vs_plain_tiles", "tiles")):
        if f"{what}_s_per_round" not in inference:
            continue  # a steps-only run
        rounds = inference[f"{what}_s_per_round"]
        out[key] = ratio_summary(rounds["plain"], rounds["dualalign"])
    return out


def markdown(result: dict) -> str:
    """The report of one benchmark run: step table, headline ratios with spread, the rest."""
    st = result["steps"]
    lines = [
        f"# Speed and memory, {result['machine']} ({result['date']})",
        "",
        f"Setting: {result['setting']}",
        "",
    ]
    base = "b_supervised_same_images" if "b_supervised_same_images" in st else next(iter(st))
    lines += [f"| step | s/step | peak GiB | ratio to {base} |", "|---|---|---|---|"]
    b = st[base]["s_per_step"]
    for k, v in st.items():
        peak = "n/a" if v["peak_gib"] is None else f"{v['peak_gib']:.2f}"
        lines.append(f"| {k} | {v['s_per_step']:.4f} | {peak} | {v['s_per_step'] / b:.3f} |")
    lines += [
        "",
        "Ratios: median of the per-round ratios, the interquartile range and the extremes.",
        "",
        "| ratio | median | q25 to q75 | min to max | rounds |",
        "|---|---|---|---|---|",
    ]
    for k, v in result["headline_spread"].items():
        lines.append(
            f"| {k} | {v['median']:.3f} | {v['q25']:.3f} to {v['q75']:.3f} | "
            f"{v['min']:.3f} to {v['max']:.3f} | {v['rounds']} |"
        )
    lines += ["", "| measurement | value |", "|---|---|"]
    lines += [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in {**result["inference"], **result["other"]}.items()
        if not k.endswith("_s_per_round")
    ]
    lines += ["", "Headline: " + json.dumps(result["headline"])]
    return "\n".join(lines) + "\n"
