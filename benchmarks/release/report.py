"""Every release run's chunks and gate verdicts in one table and one picture.

`python benchmarks/release/report.py [RUNS_DIR]` reads each `runs/release/*/state.json` and `verdict.json`
(written by `pomona recipe release`), and each from-scratch run gated with `--from-run` (`runs/*/verdict.json`), and
writes `results.md` and `release.png` next to this file. The real
dev photos are only ever evaluated on: each row's real score is what the gate compared, measured in that run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_runs(runs: Path) -> list[dict]:
    rows = []
    for state_file in sorted(runs.glob("*/state.json"), key=lambda p: p.stat().st_mtime):
        state = json.loads(state_file.read_text())
        verdict_file = state_file.with_name("verdict.json")
        verdict = json.loads(verdict_file.read_text()) if verdict_file.exists() else {}
        base = state.get("base_real", {}).get("mask", {}).get("map50")
        for chunk in state.get("chunks", []):
            rows.append(dict(run=state_file.parent.name, base=f"v{state['base']['version']}", base_real=base,
                             verdict=verdict, **chunk))
    return rows


def read_scratch_runs(runs: Path) -> list[dict]:
    """From-scratch recipe runs gated by `pomona recipe release --from-run RUN` (their verdict.json and candidate
    card), as rows of the same table: one chunk each, compared with the shipped model it would replace."""
    rows = []
    for verdict_file in sorted(runs.glob("*/verdict.json"), key=lambda p: p.stat().st_mtime):
        verdict = json.loads(verdict_file.read_text())
        card_file = Path(verdict.get("candidate", "")) / "card.json"
        if not card_file.is_file():
            continue
        chunk = json.loads(card_file.read_text())["training"]["chunk_list"][0]
        rows.append(dict(chunk, run=verdict_file.parent.name, base=f"scratch (vs v{verdict['version'] - 1})",
                         base_real=verdict["base_real_mask_map50"], verdict=verdict))
    return rows


def table(rows: list[dict]) -> str:
    head = ("| run | from | chunk | renders (seeds) | renderer | epochs | hours | synthetic val mask mAP50 | "
            "real dev mask mAP50 | base real | gate |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        v = r["verdict"]
        gate = ("shipped as v%d" % v["version"] if v.get("shipped") else
                ("kept out (%+.3f, noise %.3f)" % (v["delta"], v["noise"]) if v else "not gated yet"))
        lines.append(f"| {r['run']} | {r['base']} | {r['chunk']} | {r['images']} ({r['seeds'][0]}-{r['seeds'][1] - 1}) | "
                     f"{r.get('renderer_version', '?')} | {r['epochs']} | {r['hours']:.2f} | {r['synthetic_mask_map50']:.3f} | "
                     f"{r['real_mask_map50']:.3f} | {r['base_real']:.3f} | {gate} |")
    return head + "\n".join(lines) + "\n"


def seed_spread(rows: list[dict]) -> list[str]:
    """Chunks alike in all but their render seeds (same base, renderer, images, epochs): how far apart their
    real scores land is the gate's noise, measured (pomona/recipes/release.yaml sets `noise` from it)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["base"], r.get("renderer_version"), r["images"], r["epochs"]), []).append(r)
    out = []
    for (base, renderer, images, epochs), alike in groups.items():
        if len({tuple(r["seeds"]) for r in alike}) < 2:
            continue
        scores = [r["real_mask_map50"] for r in alike]
        listed = ", ".join(f"{r['real_mask_map50']:.3f} (seeds {r['seeds'][0]}-{r['seeds'][1] - 1})" for r in alike)
        out.append(f"- {base} + {images} renders of renderer {renderer}, {epochs} epochs, on other render seeds: "
                   f"real {listed}; spread **{max(scores) - min(scores):.3f}**.")
    return out


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['base']}+chunk {r['chunk']}\nr{r.get('renderer_version', '?')}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(rows), 3.6))
    ax.plot(x, [r["base_real"] for r in rows], "s--", color="grey", label="base, real dev")
    ax.plot(x, [r["real_mask_map50"] for r in rows], "o-", color="tab:red", label="candidate, real dev")
    ax.plot(x, [r["synthetic_mask_map50"] for r in rows], "o-", color="tab:blue", label="candidate, own synthetic val")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("mask mAP50")
    ax.set_title("release chunks: candidate vs the model it continued")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(runs: Path = Path("runs/release")) -> None:
    rows = read_runs(runs) + read_scratch_runs(runs.parent)
    if not rows:
        sys.exit(f"error: no release runs with chunks under {runs}")
    plot(rows, HERE / "release.png")
    spread = seed_spread(rows)
    noise = ("The noise between chunks, measured: the same chunk on other render seeds.\n\n" + "\n".join(spread)
             + "\n\n") if spread else ""
    text = ("# Release chunks and their gate\n\n"
            "`python benchmarks/release/report.py` over the `pomona recipe release` runs in `runs/release/`. Each chunk "
            "continues a model on 800 freshly rendered images (seeds never used in its history); a `scratch` row is a "
            "whole recipe run from random weights, gated with `--from-run` against the model it would replace. The "
            "gate compares the "
            "candidate with its base on the 144 real dev photos, both measured in the same run, and ships it only when it "
            "is ahead by more than the noise. Hours are wall time on the 2-core machine, shared with other jobs in some runs.\n\n"
            + table(rows) + "\n![release chunks](release.png)\n\n"
            + noise
            + "Levers that need no training (weight soups of these chunks, a larger input size): `levers.md` "
            "(`python benchmarks/release/levers.py`).\n")
    (HERE / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/release"))
