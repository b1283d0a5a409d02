"""Section 5 of docs/benchmarks.md: the research team's code beside ours (pure: dicts -> lines).

Figures from bench/research_side.py; the loader row sets the research DataLoader against
the production loader of section 2, measured by the same `make bench` run.
"""

from __future__ import annotations

from typing import Any

from doc_sections import measured_line, med
from doc_tables import FIGURE_HEADER, figure_rows, fmt_num, markdown_table

HOW = (
    "How the research code runs: `src/` of rylanmalarchick/cloudMLPublic at the parent of "
    "commit 9e482aa, exported to a scratch folder (never into this repository) with its own "
    "virtualenv (torch 2.13.0+cpu, the same wheel as ours; torchvision 0.28.0 loaded without "
    "its CUDA ops); `../shared/research-bench/bench_original.py` drives its model "
    "(`src.pytorchmodel`), training step (`src.train_model.train_epoch`, unchanged) and "
    "dataset (`src.hdf5_dataset`) with its tuned values and `temporal_frames: 5`, eager (its "
    "`torch_compile` is a CUDA option), with as many threads as ours. Both sides train on "
    "random tensors of the same shape, so the training rows time the network, not the loader."
)

RUN_IT = (
    "To run it: `RESEARCH_BENCH=../shared/research-bench ORIG_CLOUDML=<scratch>/orig "
    "RESEARCH_PY=<scratch>/ov/bin/python .venv/bin/python bench/run.py --only research` "
    "(set-up in ../shared/research-bench/README.md); without those variables `make bench` "
    "keeps this section's last figures."
)


def research_rows(rs: dict[str, Any]) -> list[list[str]]:
    """Per (size, allocator): samples/s and MFU on each side, the paired ratio, peak RSS."""
    rows: list[list[str]] = []
    for key, label in (("full_jemalloc", "full 440x640 B=4, jemalloc"),
                       ("full_glibc", "full 440x640 B=4, glibc"),
                       ("local_jemalloc", "local 22x32 B=20, jemalloc")):  # fmt: skip
        if not rs.get(f"{key}_ratio"):
            continue
        rows += figure_rows([
            (f"{label}: research", rs.get(f"{key}_research_samples_per_s"), "", 1.0),
            (f"{label}: CloudML", rs.get(f"{key}_ours_samples_per_s"), "", 1.0),
            (f"{label}: CloudML / research, paired per round", rs.get(f"{key}_ratio"), "", 1.0),
            (f"{label}: research MFU (%)", rs.get(f"{key}_research_mfu"), "", 100.0),
            (f"{label}: CloudML MFU (%)", rs.get(f"{key}_ours_mfu"), "", 100.0),
            (f"{label}: research peak RSS", rs.get(f"{key}_research_peak_rss_gib"), "", 1.0),
            (f"{label}: CloudML peak RSS", rs.get(f"{key}_ours_peak_rss_gib"), "", 1.0),
        ])  # fmt: skip
    return rows


def loader_sentence(rs: dict[str, Any], ld: dict[str, Any]) -> list[str]:
    theirs, ours = (
        med(rs.get("loader_research_samples_per_s")),
        med(ld.get("production_samples_per_s")),
    )
    if theirs is None:
        return []
    rows = figure_rows([("research DataLoader, full size, augment, 2 workers, jemalloc",
                         rs.get("loader_research_samples_per_s"), "", 1.0)])  # fmt: skip
    text = markdown_table(rows, FIGURE_HEADER)
    if ours is None:
        return [text, ""]
    return [text, "", f"Against the production loader of section 2 ({fmt_num(ours)} samples/s, "
            f"same make bench run): {fmt_num(ours / theirs)}x.", ""]  # fmt: skip


def research_lines(rs: dict[str, Any], ld: dict[str, Any]) -> list[str]:
    """Section 5: the same-sitting comparison with the research code, or how to run it."""
    out = ["## 5. The research code, same sitting", "", measured_line(rs), HOW, "", RUN_IT, ""]
    if not rs or rs.get("error"):
        return out
    fl = rs.get("train_flops") or {}
    ours, theirs = fl.get("ours") or {}, fl.get("research") or {}
    out += [
        "Training GFLOP per sample (3 x forward, each network's own FlopCounterMode count): "
        + ", ".join(f"{s}: research {fmt_num(theirs.get(s, 0) / 1e9)}, CloudML "
                    f"{fmt_num(ours.get(s, 0) / 1e9)}" for s in ("440x640", "22x32"))
        + f"; fp32 matmul ceiling {fmt_num((med(rs.get('matmul_flops_per_s')) or 0) / 1e9)} "
        "GFLOP/s measured in this section.",
        "",
        markdown_table(research_rows(rs), FIGURE_HEADER),
        "",
    ]  # fmt: skip
    return out + loader_sentence(rs, ld)
