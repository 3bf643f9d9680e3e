"""Summarise a tools/gpu_check.sh run: OUTDIR/summary.json and OUTDIR/summary.md.

Reads OUTDIR/gpu.txt (machine and versions), junit.xml (the test suite), bitwise_probe.jsonl and
gpu_decode.json (bench/bench_gpu_decode.py). Usage: python tools/gpu_summary.py OUTDIR
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def tests(junit: Path) -> dict[str, Any]:
    """Counts and the names of failed, errored and skipped GPU (cuda-marked file) tests."""
    if not junit.exists():
        return {"error": "no junit.xml (pytest did not finish)"}
    root = ET.parse(junit).getroot()
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed, skipped = [], []
    for case in root.iter("testcase"):
        counts["tests"] += 1
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            counts["failures"] += 1
            failed.append(name)
        elif case.find("error") is not None:
            counts["errors"] += 1
            failed.append(name)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            skipped.append(f"{name}: {case.find('skipped').get('message', '')[:120]}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed": failed, "skipped_list": skipped}


def main() -> None:
    out = Path(sys.argv[1])
    summary: dict[str, Any] = {
        "machine": (out / "gpu.txt").read_text().strip().splitlines() if (out / "gpu.txt").exists() else [],
        "tests": tests(out / "junit.xml"),
    }
    probe = out / "bitwise_probe.jsonl"
    if probe.exists():
        summary["bitwise_probe"] = [json.loads(line) for line in probe.read_text().splitlines()
                                    if line.startswith("{")]
    bench = out / "gpu_decode.json"
    if bench.exists():
        summary["bench"] = json.loads(bench.read_text())
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    t = summary["tests"]
    lines = ["# GPU check", "", *[f"- {m}" for m in summary["machine"]], "", "## Tests", ""]
    if "error" in t:
        lines.append(t["error"])
    else:
        lines.append(f"{t['passed']} passed, {t['failures']} failed, {t['errors']} errors, {t['skipped']} skipped")
        lines += [f"- FAILED {n}" for n in t["failed"]]
        lines += ["", "Skipped:"] + [f"- {s}" for s in t["skipped_list"][:40]]
    for row in summary.get("bitwise_probe", []):
        lines.append(f"- probe {row.get('env')}: pixnerdit {row.get('pixnerdit')} ddt {row.get('ddt')} "
                     f"blas {row.get('blas')}")
    if "bench" in summary:
        lines += ["", "## Decode benchmarks (median ms)", ""]
        for name, rows in summary["bench"].items():
            if name == "env" or not isinstance(rows, dict):
                continue
            if "error" in rows:
                lines.append(f"- {name}: ERROR {rows['error'][:200]}")
                continue
            cells = [f"{k} {v['median_ms']}" + (f" ({v['psnr_vs_ref_fp32']} dB)" if "psnr_vs_ref_fp32" in v else "")
                     for k, v in rows.items() if isinstance(v, dict) and "median_ms" in v]
            lines.append(f"- {name}: " + "; ".join(cells))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:60]))


if __name__ == "__main__":
    main()
