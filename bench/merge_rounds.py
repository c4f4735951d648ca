#!/usr/bin/env python3
"""Merges hyperfine JSON exports of several rounds of the same commands (bench/run.sh with ROUNDS > 1)
into one export of the same shape: every command's runs pooled, its statistics recomputed.

    merge_rounds.py OUT.json ROUND1.json ROUND2.json ...
"""
import json
import statistics
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: merge_rounds.py OUT.json ROUND.json...")
    merged = {}
    order = []
    for path in sys.argv[2:]:
        with open(path) as f:
            for r in json.load(f)["results"]:
                name = r["command"]
                if name not in merged:
                    order.append(name)
                    merged[name] = {"command": name, "times": [], "user": [], "system": [], "exit_codes": []}
                m = merged[name]
                for key in ("times", "exit_codes"):
                    m[key] += r.get(key) or []
                # hyperfine keeps only the mean user and system time of a round: one value per run
                runs = len(r.get("times") or [])
                m["user"] += [r.get("user", 0.0)] * runs
                m["system"] += [r.get("system", 0.0)] * runs
    results = []
    for name in order:
        m = merged[name]
        t = m["times"]
        results.append({
            "command": name,
            "mean": statistics.fmean(t),
            "stddev": statistics.stdev(t) if len(t) > 1 else None,
            "median": statistics.median(t),
            "user": statistics.fmean(m["user"]),
            "system": statistics.fmean(m["system"]),
            "min": min(t),
            "max": max(t),
            "times": t,
            "exit_codes": m["exit_codes"],
            "rounds": len(sys.argv) - 2,
        })
    with open(sys.argv[1], "w") as f:
        json.dump({"results": results}, f, indent=2)


if __name__ == "__main__":
    main()
