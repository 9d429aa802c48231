#!/usr/bin/env python3
"""Issue 16's one table: every benchmark records its ratios and targets here, and this prints them together.

Each bench script calls :func:`record` once per figure it measured against a target; the rows go, one JSON
object a line, to ``BENCH_TARGETS_FILE`` (default ``bench/results/targets.jsonl``, which ``make bench`` empties
first).  ``python bench/targets.py`` (the last step of ``make bench``) prints them as one table with the
machine they ran on and whether each met its target.  A figure is always a measurement of this run: a script
that could not measure something records nothing for it, and the table says which expected rows are missing.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILE = Path(os.environ.get("BENCH_TARGETS_FILE") or ROOT / "bench" / "results" / "targets.jsonl")


def machine() -> str:
    """The machine a figure ran on: CPUs, model, memory, load average when it was recorded."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2 ** 30:.0f} GiB"
    except (ValueError, OSError):
        memory = "?"
    return f"{os.cpu_count()} CPUs {model}, {memory}, {platform.system()} {platform.release()}"


def record(area: str, figure: str, database: str, value: float, target: float, *, higher_is_better: bool,
           unit: str = "", detail: str = "") -> bool:
    """Append one measured figure and its target; returns whether it met the target.

    ``value`` and ``target`` are in the same unit (a ratio such as 0.92, or milliseconds); ``higher_is_better``
    says which side of the target passes.  ``detail`` carries what the ratio was made of (both rates, say).
    """
    meets = value >= target if higher_is_better else value <= target
    FILE.parent.mkdir(parents=True, exist_ok=True)
    row = {"area": area, "figure": figure, "database": database, "value": value, "target": target,
           "higher_is_better": higher_is_better, "unit": unit, "detail": detail, "meets": meets,
           "load": os.getloadavg()[0], "machine": machine(), "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    with FILE.open("a") as out:
        out.write(json.dumps(row) + "\n")
    return meets


def reset() -> None:
    """Start a new run's table."""
    FILE.unlink(missing_ok=True)


def _shown(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value:.0%}"
    return f"{value:,.1f}{(' ' + unit) if unit else ''}"


def table(rows: list[dict]) -> list[str]:
    """The rows as one aligned table, grouped by area in the order they were recorded."""
    if not rows:
        return [f"no benchmark figures recorded in {FILE}"]
    head = f"{'area':<10} {'figure':<52} {'database':<11} {'measured':>14} {'target':>14}  meets"
    lines = [f"machine: {rows[0]['machine']}", head, "-" * len(head)]
    for row in rows:
        sign = ">=" if row["higher_is_better"] else "<="
        lines.append(f"{row['area']:<10} {row['figure']:<52} {row['database']:<11} "
                     f"{_shown(row['value'], row['unit']):>14} {sign + ' ' + _shown(row['target'], row['unit']):>14}  "
                     f"{'yes' if row['meets'] else 'NO'}")
        if row["detail"]:
            lines.append(f"{'':<10}   {row['detail']} (load {row['load']:.1f})")
    met = sum(row["meets"] for row in rows)
    lines.append(f"{met} of {len(rows)} targets met")
    return lines


def main() -> int:
    rows = [json.loads(line) for line in FILE.read_text().splitlines() if line.strip()] if FILE.exists() else []
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
