"""Section 3's note on why full-size MFU is what it is (pure: train results -> lines).

Figures from bench/step_anatomy.py: the full-size step without checkpointing (no recompute)
beside the checkpointed one, and the checkpointed step's profile by kind of operator.
"""

from __future__ import annotations

from typing import Any

from doc_sections import med
from doc_tables import FIGURE_HEADER, figure_rows, fmt_num, markdown_table


def anatomy_lines(tr: dict[str, Any]) -> list[str]:
    """The no-recompute rows, the recompute's cost, and the profile table ([] if unmeasured)."""
    nock, ck = med(tr.get("full_nockpt_samples_per_s")), med(tr.get("full_jemalloc_samples_per_s"))
    if nock is None:
        return []
    b = (tr.get("full_nockpt_samples_per_s") or {}).get("batch", "?")
    rows = figure_rows([
        (f"full jemalloc B={b}, no checkpointing: throughput", tr.get("full_nockpt_samples_per_s"),
         "", 1.0),
        (f"full jemalloc B={b}, no checkpointing: MFU (%)", tr.get("full_nockpt_mfu"), "", 100.0),
        (f"full jemalloc B={b}, no checkpointing: peak RSS", tr.get("full_nockpt_peak_rss_gib"),
         "", 1.0),
    ])  # fmt: skip
    est = tr.get("full_nockpt_b20_rss_estimate_gib")
    out = [
        "### Why full size sits where it does",
        "",
        "The same full-size step without gradient checkpointing (no recompute; BatchNorm then "
        "normalises over all B x T frames, so this measures the arithmetic's speed, not a "
        "setting to ship):",
        "",
        markdown_table(rows, FIGURE_HEADER),
        "",
    ]
    if ck:
        out += [
            f"Checkpointing costs {1 - ck / nock:.0%} of the throughput here "
            f"({fmt_num(ck)} vs {fmt_num(nock)} samples/s)"
            + (f"; without it batch 20 would need ~{est:.0f} GiB (extrapolated from B=2 and "
               f"B={b}), against the 16 GiB budget." if est is not None else "."),
            "",
        ]  # fmt: skip
    out += [
        "MFU near or above 90% (here, and at local scale) means oneDNN's convolutions run about "
        "as fast as the 2048x2048 torch.mm this table divides by: every MFU here is a fraction "
        "of that measured rate (the issue's definition), not of the chip's nominal peak.",
        "",
    ]
    prof = tr.get("full_profile") or {}
    if prof.get("shares"):
        rows2 = [[k, f"{v:.0%}"] for k, v in prof["shares"].items() if v >= 0.005]
        out += [
            f"Where the checkpointed full-size step (B={prof.get('batch')}, one profiled step of "
            f"{prof.get('step_s', 0):.1f} s, `{prof.get('command', '')}`) spends its time, by "
            "operator self time (forward kinds include the recompute):",
            "",
            markdown_table(rows2, ("kind of operator", "share of the step")),
            "",
        ]
    return out
