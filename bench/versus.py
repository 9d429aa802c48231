#!/usr/bin/env python3
"""``make bench-versus REV=<commit>``: the gateway at REV against this checkout, in one interleaved run.

A refactoring that should change nothing (issue 10's re-zoning) is checked here: REV is checked out
into a temporary git worktree with its own virtualenv (its ``make install``); so is AFTER when it is
given (``bench/versus.py REV AFTER``: two commits, e.g. a merge's first parent and the merge), else
the after side is this checkout.  Each side's own
``bench/bench.py`` measures its own gateway (``BENCH_TARGETS=gateway``, no soak, no slow clients)
in rounds that alternate the order (before/after, then after/before, ...), so a machine that grows
busier or quieter during the run weighs on both sides alike.

It prints, per database, each side's median accepted webhooks/s and p99, their ratio, and the
noise: the spread (max/min) of each side's own rounds.  A ratio below 1 by more than that spread is
reported as a regression.  Knobs: BENCH_VERSUS_ROUNDS (3), BENCH_DURATION (15),
BENCH_VERSUS_KINDS ("sqlite,postgresql"; ``before:after`` pairs name a database kind differently
per side, e.g. ``sqlite:sqlite-normal`` when REV's SQLite default was synchronous=NORMAL).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.targets import machine, record  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_VERSUS_ROUNDS") or 3)
DURATION = os.environ.get("BENCH_DURATION") or "15"
KINDS = [tuple(pair.split(":", 1)) if ":" in pair else (pair, pair)
         for pair in (os.environ.get("BENCH_VERSUS_KINDS") or "sqlite,postgresql").split(",") if pair.strip()]


def prepare(rev: str, workdir: Path, side: str) -> Path:
    """A worktree of ``rev`` with its own installed virtualenv."""
    tree = workdir / side
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(workdir / f"install-{side}.log", "w") as log:  # pip's warnings, kept out of the figures
        installed = subprocess.run(["make", "-C", str(tree), "install"], stdout=log, stderr=subprocess.STDOUT)
    if installed.returncode:
        raise SystemExit(f"make install failed at {rev}:\n{(workdir / f'install-{side}.log').read_text()[-3000:]}")
    return tree


def measure(tree: Path, kind: str, workdir: Path) -> dict:
    """One gateway-only run of ``tree``'s own bench.py on one database kind."""
    out = workdir / "result.json"
    env = dict(os.environ, BENCH_DBS=kind, BENCH_TARGETS="gateway", BENCH_SOAK_REQUESTS="0",
               BENCH_SLOW_CLIENTS="0", BENCH_DURATION=DURATION, BENCH_OUT=str(out), BENCH_RUNS="1")
    env.pop("BENCH_TARGETS_FILE", None)
    subprocess.run([str(tree / ".venv" / "bin" / "python"), str(tree / "bench" / "bench.py")], env=env, check=True,
                   cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = json.loads(out.read_text())["results"][kind]["gateway"][0]
    return {"rate": run["accepted_per_s"], "p99": run["p99_ms"], "load": os.getloadavg()[0]}


def spread(values: list[float]) -> float:
    return max(values) / min(values) if min(values) > 0 else float("inf")


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print("usage: bench/versus.py REV [AFTER] (commits; AFTER defaults to this checkout)", file=sys.stderr)
        return 2
    rev = sys.argv[1]
    after = sys.argv[2] if len(sys.argv) == 3 else "HEAD"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", after], capture_output=True, text=True,
                          check=True).stdout.strip()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-versus-"))
    try:
        before_tree = prepare(rev, workdir, "before")
        after_tree = prepare(head, workdir, "after") if len(sys.argv) == 3 else ROOT
        runs = {(kinds, side): [] for kinds in KINDS for side in ("before", "after")}
        for round_ in range(ROUNDS):
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for kinds in KINDS:
                for side in order:
                    tree, kind = (before_tree, kinds[0]) if side == "before" else (after_tree, kinds[1])
                    result = measure(tree, kind, workdir)
                    runs[kinds, side].append(result)
                    print(f"round {round_ + 1} {side:6} {kind:12} {result['rate']:7.0f}/s p99 {result['p99']:6.1f} ms"
                          f" (load {result['load']:.1f})", flush=True)
        print(f"\n{rev} (before) vs {head} (after); machine: {machine()}; {ROUNDS} rounds of {DURATION} s, medians")
        print(f"{'database':<26}{'before/s':>9}{'after/s':>9}{'after/before':>13}{'noise':>7}"
              f"{'p99 before':>11}{'p99 after':>10}  verdict")
        for kinds in KINDS:
            before, after = runs[kinds, "before"], runs[kinds, "after"]
            rate_b, rate_a = (statistics.median(r["rate"] for r in rs) for rs in (before, after))
            noise = max(spread([r["rate"] for r in before]), spread([r["rate"] for r in after]))
            ratio = rate_a / rate_b
            regressed = ratio < 1 / noise
            label = kinds[0] if kinds[0] == kinds[1] else f"{kinds[0]} -> {kinds[1]}"
            print(f"{label:<26}{rate_b:>9.0f}{rate_a:>9.0f}{ratio:>13.0%}{noise - 1:>7.0%}"
                  f"{statistics.median(r['p99'] for r in before):>11.1f}"
                  f"{statistics.median(r['p99'] for r in after):>10.1f}  "
                  f"{'no verdict: one round shows no noise' if ROUNDS < 2 else 'REGRESSION beyond noise' if regressed else 'within noise or better'}")
            if ROUNDS < 2:
                continue
            record("versus", f"accepted/s {head} vs {rev}", kinds[1], ratio, 1 / noise, higher_is_better=True,
                   unit="ratio", detail=f"{rate_a:.0f}/s vs {rate_b:.0f}/s, noise {noise - 1:.0%} (spread of a side's "
                                         f"rounds)")
        return 0
    finally:
        for side in ("before", "after"):
            if (workdir / side).exists():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(workdir / side)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
