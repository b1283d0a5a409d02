"""Training draws: the tuned pipeline's stages on several synthetic campaigns and seeds.

    .venv/bin/python bench/draws.py train  [--campaigns 1,2,0] [--seeds 42,43,44] [--seeds0 ...]
        [--set KEY=VALUE ...]
    .venv/bin/python bench/draws.py report [--k K]

`train` writes, per (campaign c, training seed s), build/draws/c<c>/s<s>/ with the evaluate
stage's metrics.json and predictions.csv (ingest -> pretrain -> finetune -> evaluate, the
same stage functions the pipeline's components call, at scale=local). Finished draws are
skipped, so a stopped run resumes. Each draw is one single-member model. `--set` overrides
the tuned preset for every draw (e.g. mixed_precision=false for float32 draws on a bf16 CPU);
give such draws their own CLOUDML_DRAWS_DIR.

`import RUN_DIR --campaign C` adds the members of a `make run` (runs/<run>/predictions.csv
has one column per member seed) as draws of campaign C: a pipeline member is the same
computation as a draw with its seed.

`report` reads the draws and writes docs/draws.md: per campaign, every single member's R²,
the ridge baseline's R², and the R² of K-member ensembles formed by averaging the saved
predictions of members (disjoint groups: independent ensembles; every K-combination: the
distribution's median), with median, spread and the gate's pass rate (R² > 0.3 and above
the baseline), single member vs ensemble.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("CLOUDML_DRAWS_DIR", REPO / "build/draws"))
DOC = REPO / "docs/draws.md"
THRESHOLD = 0.3


DOC_HEAD = """# Training draws: single members, ensembles, the baseline

Written by `bench/draws.py report` from the draws under build/draws (`bench/draws.py train`,
and `bench/draws.py import` for the members of a `make run`). Tuned preset, scale=local,
validation flight 12Feb25, this machine's float path. The gate's pass rule here: R² > 0.3
and above the ridge baseline.

"""
MARKER = "\n<!-- written by hand below this line"  # the analysis after it is kept


def _campaign(c: int) -> Path:
    """Raw flights of campaign seed c (generated once) and their shards (ingested once)."""
    from cloudml.config import load_config
    from cloudml.data import synth
    from cloudml.data.ingest import ingest_flight

    raw, shards = OUT / f"c{c}" / "raw", OUT / f"c{c}" / "shards"
    cfg = load_config("tuned", {"scale": "local"})
    if not (raw / "done").exists():
        shutil.rmtree(raw, ignore_errors=True)
        synth.write_campaign(raw, seed=c, frame_size=synth.LOCAL_FRAME)
        (raw / "done").touch()
    shards.mkdir(parents=True, exist_ok=True)
    for f in cfg.data.flights:
        if not (shards / f"{f}.h5").exists():
            ingest_flight(raw, f, shards / f"{f}.h5", cfg)
    return shards


def train(
    campaigns: list[int], seeds: dict[int, list[int]], overrides: dict[str, Any] | None = None
) -> None:
    from cloudml.config import load_config
    from cloudml.evaluate import evaluate

    try:  # the layout after the restructuring, or the flat one before it
        from cloudml.training.stages import finetune, pretrain
    except ImportError:
        from cloudml.train import finetune, pretrain

    for c in campaigns:
        shard_dir = _campaign(c)
        for s in seeds[c]:
            d = OUT / f"c{c}" / f"s{s}"
            if (d / "metrics.json").exists():
                continue
            cfg = load_config("tuned", {**(overrides or {}), "scale": "local", "seed": s})
            shards = {p.stem: p for p in sorted(shard_dir.glob("*.h5"))}
            work = OUT / f"c{c}" / f"work-s{s}"
            t0 = time.perf_counter()
            pretrain(shards, cfg, work / "pretrain")
            finetune(shards, cfg, work / "pretrain" / "model.pt", work / "finetune")
            val = cfg.data.validation_flight
            m = evaluate(shards[val], work / "finetune" / "model.pt", cfg, work / "eval")
            m["seconds"] = time.perf_counter() - t0
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / "eval" / "predictions.csv", d / "predictions.csv")
            (d / "metrics.json").write_text(json.dumps(m, indent=2))
            print(f"campaign {c} seed {s}: R2 {m['r2']:.3f} ({m['seconds']:.0f} s)", flush=True)


def import_run(run_dir: Path, campaign: int) -> list[int]:
    """Members of a local run as draws of `campaign` (the run's data must be that campaign)."""
    with open(run_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    seeds = [int(k.split("_")[1]) for k in rows[0] if k.startswith("member_")]
    for s in seeds:
        d = OUT / f"c{campaign}" / f"s{s}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time_utc", "cbh_true_km", "cbh_pred_km"])
            for r in rows:
                w.writerow([r["time_utc"], r["cbh_true_km"], r[f"member_{s}_km"]])
        (d / "metrics.json").write_text(json.dumps({"source": str(run_dir), "seed": s}))
    return seeds


def _r2(y, p) -> float:
    from cloudml.metrics import regression_metrics

    return regression_metrics(y, p)["r2"]


def _load(c: int) -> tuple:
    """(y, {seed: predictions}, baseline R²) of campaign c's draws."""
    import numpy as np

    from cloudml.data.shard import read_shard
    from cloudml.evaluate import baseline_summary

    preds, y = {}, None
    for d in sorted((OUT / f"c{c}").glob("s*/predictions.csv")):
        with open(d) as f:
            rows = list(csv.DictReader(f))
        y = np.array([float(r["cbh_true_km"]) for r in rows])
        preds[int(d.parent.name[1:])] = np.array([float(r["cbh_pred_km"]) for r in rows])
    shards = {p.stem: p for p in (OUT / f"c{c}" / "shards").glob("*.h5")}
    val = read_shard(shards.pop("12Feb25"))
    base = baseline_summary(val.cbh_km.astype(float), shards, val)[0]["r2"]  # as evaluate fits it
    return y, preds, base


def _stats(xs: list[float]) -> str:
    import numpy as np

    a = np.array(xs)
    return f"{np.median(a):.3f} | {a.min():.3f} … {a.max():.3f} | {a.std(ddof=1) if len(a) > 1 else 0:.3f}"


def _passes(r2s: list[float], base: float) -> str:
    """How many of the R²s pass the gate (above the threshold and the baseline)."""
    return f"{sum(x > THRESHOLD and x > base for x in r2s)}/{len(r2s)}"


def _combos(y, preds: dict, k: int) -> tuple[list[float], list[float]]:
    """(R² of disjoint k-member groups in seed order, R² of every k-combination)."""
    import numpy as np

    seeds = sorted(preds)
    groups = [seeds[i : i + k] for i in range(0, len(seeds) - k + 1, k)]
    disjoint = [_r2(y, np.mean([preds[s] for s in g], axis=0)) for g in groups]
    every = [
        _r2(y, np.mean([preds[s] for s in g], axis=0)) for g in itertools.combinations(seeds, k)
    ]
    return disjoint, every


def _sd(xs: list[float]) -> float:
    import numpy as np

    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def choice_rows(campaigns: dict[int, tuple], ks: tuple[int, ...]) -> list[str]:
    """The ensemble-size comparison: per campaign and K, the median, sd, sd against a single
    member's and gate pass rate over every K-combination of the draws."""
    import numpy as np

    lines = [
        "| campaign | K | combinations | median R² | sd | sd / single sd | gate pass |",
        "|---" * 7 + "|",
    ]
    for c, (y, preds, base) in campaigns.items():
        single_sd = _sd(_combos(y, preds, 1)[1])
        for k in ks:
            every = _combos(y, preds, k)[1]
            if not every:
                continue
            ratio = _sd(every) / single_sd if single_sd > 0 else float("nan")
            lines.append(
                f"| {c} | {k} | {len(every)} | {np.median(every):.3f} | {_sd(every):.3f} | "
                f"{ratio:.2f} | {_passes(every, base)} |"
            )
    return lines


def report(k: int, compare: tuple[int, ...] = (1, 2, 3)) -> str:
    """The draws table for ensembles of k (markdown, written to docs/draws.md), the single
    members, and the ensemble sizes in `compare` side by side."""
    lines = [
        "| campaign | draws (seeds) | baseline R² | single R²: median | range | sd "
        f"| single: gate pass | {k}-member ensembles, disjoint groups | all {k}-combinations: "
        "median | range | sd | ensemble: gate pass (all combinations) |",
        "|---" * 12 + "|",
    ]
    detail = []
    campaigns = {}
    for c in sorted(int(p.name[1:]) for p in OUT.glob("c*") if p.is_dir()):
        y, preds, base = _load(c)
        if not preds:
            continue
        campaigns[c] = (y, preds, base)
        seeds = sorted(preds)
        single = _combos(y, preds, 1)[1]
        disjoint, combos = _combos(y, preds, k)
        lines.append(
            f"| {c} | {len(seeds)} ({seeds[0]}–{seeds[-1]}) | {base:.3f} | {_stats(single)} | "
            f"{_passes(single, base)} | {', '.join(f'{x:.3f}' for x in disjoint) or '–'} | "
            f"{_stats(combos) if combos else '–'} | {_passes(combos, base) if combos else '–'} |"
        )
        detail.append(
            f"- campaign {c}: "
            + ", ".join(f"seed {s}: {r:.3f}" for s, r in zip(seeds, single, strict=True))
        )
    choice = [
        "",
        f"Ensemble sizes side by side (every K-combination of the same draws; K = 1 is the "
        f"single members; the table above is K = {k}):",
        "",
        *choice_rows(campaigns, compare),
    ]
    text = "\n".join(lines + ["", "Single members:", "", *detail, *choice, ""])
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--campaigns", default="1,2,0")
    t.add_argument("--seeds", default="42,43,44", help="training seeds on campaigns 1, 2")
    t.add_argument("--seeds0", default="42,43,44,45,46,47", help="training seeds on campaign 0")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every draw (repeatable)")  # fmt: skip
    i = sub.add_parser("import")
    i.add_argument("run_dir", type=Path)
    i.add_argument("--campaign", type=int, required=True)
    r = sub.add_parser("report")
    r.add_argument(
        "--k", type=int, default=None, help="ensemble size (default: the config's ensemble_size)"
    )
    args = ap.parse_args()
    if args.cmd == "import":
        print(import_run(args.run_dir, args.campaign))
    elif args.cmd == "report":
        from cloudml.config import load_config

        text = report(args.k or load_config("tuned").train.ensemble_size)
        print(text)
        kept = DOC.read_text().partition(MARKER)[1:] if DOC.is_file() else ("", "")
        DOC.write_text(DOC_HEAD + text + "".join(kept))
    elif args.cmd == "train":
        cs = [int(c) for c in args.campaigns.split(",")]
        other = [int(s) for s in args.seeds.split(",")]
        seeds = {c: ([int(s) for s in args.seeds0.split(",")] if c == 0 else other) for c in cs}
        from cloudml.config import parse_overrides

        train(cs, seeds, parse_overrides(args.set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
