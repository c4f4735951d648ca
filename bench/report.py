#!/usr/bin/env python3
"""Turns one bench/run.sh results directory into Markdown (stdout).

    report.py RESULTS_DIR

Reads what run.sh and latency.sh wrote there: CORPUS.json (hyperfine --export-json), CORPUS.checks.tsv,
CORPUS.rss.*.json (rss.py), CORPUS.load.txt, env.txt, and latency.* for the latency scenario.
ratio = mean time of `cp -a` / mean time of the command (higher is faster; 2.0 = twice as fast as cp -a).
"""
import json
import os
import sys

CORPORA = [
    ("small", "50,000 x 4 KiB files in 500 directories"),
    ("usr_share", "a copy of /usr/share"),
    ("big4", "4 x 512 MiB files"),
    ("one2g", "one 2 GiB file"),
    ("empty300k", "300,000 empty files in 300 directories"),
]
# Issue 6 targets: ratio cp -a / pcopy -j2 (default mode, --inplace).
TARGETS = {"small": (3.0, 4.0), "usr_share": (3.0, None), "big4": (2.0, None), "one2g": (1.6, None)}


def read_kv(path):
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    out[k] = v
    return out


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_tsv(path):
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if cols and cols[0]:
                    rows[cols[0]] = cols[1:]
    return rows


def load_text(load, when="just before the timed runs"):
    text = (f"Other load on the machine: load average (1/5/15 min) {load.get('load_start', '?')} at the start, "
            f"{load.get('load_end', '?')} at the end")
    if "busy_before" in load:
        text += f"; CPU busy {when}: {load['busy_before']}"
    return text + "."


def fmt_s(x):
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"


def mib(kib):
    return "?" if kib is None else f"{kib / 1024:.1f}"


def check_text(row):
    """row: [exit, content diffs, metadata diffs, ...] from a checks.tsv."""
    if not row:
        return ""
    status, diffs, meta = row[0], row[1], row[2]
    if status == "0" and diffs == "0" and meta == "0":
        return "ok"
    parts = []
    if status != "0":
        parts.append(f"exit {status}")
    if diffs != "0":
        parts.append(f"{diffs} content diff lines")
    if meta != "0":
        parts.append(f"{meta} metadata diff lines")
    return "**" + ", ".join(parts) + "**"


def code(cmd):
    """A command as inline code in a table cell (a bare | would end the cell)."""
    return "`" + cmd.replace("|", "\\|") + "`"


def results_by_name(hf):
    return {r["command"]: r for r in hf["results"]}


def timing_cells(r, base):
    mean, sd, med = r["mean"], r.get("stddev") or 0.0, r["median"]
    ratio = f"{base / mean:.2f}x" if base else "?"
    return f"{fmt_s(mean)} ± {fmt_s(sd)}", fmt_s(med), ratio


def corpus_section(d, name, desc, summary):
    hf = read_json(os.path.join(d, f"{name}.json"))
    failed = os.path.exists(os.path.join(d, f"{name}.failed.txt"))
    if hf is None and not failed:
        return None
    lines = [f"### {name}: {desc}", ""]
    load = read_kv(os.path.join(d, f"{name}.load.txt"))
    if load:
        lines += [load_text(load), ""]
    if failed:
        lines += ["**hyperfine failed on this corpus** (a command exited non-zero); see "
                  f"`{name}.hyperfine.txt` and the check column.", ""]
    checks = read_tsv(os.path.join(d, f"{name}.checks.tsv"))
    if hf is None:
        for cmd, row in checks.items():
            lines.append(f"- {cmd}: {check_text(row)}")
        return "\n".join(lines) + "\n"
    by = results_by_name(hf)
    base = by.get("cp -a", {}).get("mean")
    lines += ["| command | mean ± σ (s) | median (s) | ratio (cp -a / cmd) | peak RSS, MiB: any process "
              "(parent / largest worker) | check |",
              "|---|---|---|---|---|---|"]
    for r in hf["results"]:
        cmd = r["command"]
        mean_sd, med, ratio = timing_cells(r, base)
        rss = ""
        rj = read_json(os.path.join(d, f"{name}.rss.{cmd.replace(' ', '_')}.json"))
        if rj:
            rss = (f"{mib(rj.get('time_maxrss_kib'))} ({mib(rj.get('parent_hwm_kib'))} / "
                   f"{mib(rj.get('child_hwm_kib'))})")
        lines.append(f"| {code(cmd)} | {mean_sd} | {med} | {ratio} | {rss} | {check_text(checks.get(cmd))} |")
    lines.append("")
    notes = []
    j1, j2, floor = by.get("pcopy -j1"), by.get("pcopy -j2"), by.get("floor 2 tr")
    if j2 and floor:
        v = j2["mean"] / floor["mean"]
        target = " (target <= 1.3x)" if name == "small" else ""
        notes.append(f"pcopy -j2 time / floor time: **{v:.2f}x**{target}")
    if j1 and j2:
        v = j1["mean"] / j2["mean"]
        target = " (target >= 1.7x)" if name == "small" else ""
        notes.append(f"pcopy -j1 time / pcopy -j2 time: **{v:.2f}x**{target}")
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    if name in TARGETS and base:
        t_def, t_inp = TARGETS[name]
        for label, cmd, t in (("default", "pcopy -j2", t_def), ("--inplace", "pcopy -j2 --inplace", t_inp)):
            if t is not None and cmd in by:
                v = base / by[cmd]["mean"]
                summary.append((name, label, v, t))
    return "\n".join(lines) + "\n"


def latency_section(d):
    hf = read_json(os.path.join(d, "latency.json"))
    env = read_kv(os.path.join(d, "latency.env.txt"))
    checks = read_tsv(os.path.join(d, "latency.checks.tsv"))
    failed = os.path.exists(os.path.join(d, "latency.failed.txt"))
    if hf is None and not checks and not failed:
        return None
    lines = ["### latency: slow network file system (FUSE pass-through with a fixed delay per request)", ""]
    cp_req = checks.get("cp -a")
    rtt = ""
    if cp_req and cp_req[3].isdigit() and len(cp_req) > 4:
        per = float(cp_req[4]) / int(cp_req[3]) * 1000
        rtt = f"; effective round trip seen by the serial `cp -a`: {per:.2f} ms per request"
    lines += [f"{env.get('files', '?')} x 4 KiB files in {env.get('dirs', '?')} directories, SRC and DST on "
              f"the same latfs mount; delay {env.get('delay_us', '?')} µs per request{rtt}; "
              f"{env.get('fuse_threads', '?')} server threads; caches dropped before every run: "
              f"{env.get('cold_caches', '?')}.", ""]
    load = read_kv(os.path.join(d, "latency.load.txt"))
    if load:
        lines += [load_text(load, "just before the scenario"), ""]
    if failed or hf is None:
        lines += ["**The latency run failed**; checked runs:", ""]
        for cmd, row in checks.items():
            lines.append(f"- {cmd}: {check_text(row)}")
        return "\n".join(lines) + "\n"
    by = results_by_name(hf)
    base = by.get("cp -a", {}).get("mean")
    j1 = by.get("pcopy -j1", {}).get("mean")
    files = int(env["files"]) if env.get("files", "").isdigit() else None
    lines += ["| command | mean ± σ (s) | median (s) | ratio (cp -a / cmd) | speed-up over pcopy -j1 | "
              "requests per run | requests per file | check |",
              "|---|---|---|---|---|---|---|---|"]
    for r in hf["results"]:
        cmd = r["command"]
        mean_sd, med, ratio = timing_cells(r, base)
        scale = f"{j1 / r['mean']:.2f}x" if j1 and cmd.startswith("pcopy") else ""
        row = checks.get(cmd)
        req = row[3] if row and len(row) > 3 else "?"
        per = f"{int(req) / files:.1f}" if files and req.isdigit() else "?"
        lines.append(f"| {code(cmd)} | {mean_sd} | {med} | {ratio} | {scale} | {req} | {per} | {check_text(row)} |")
    # Requests per file by operation, from each command's checked run.
    ops = {}
    for r in hf["results"]:
        path = os.path.join(d, f"latency.ops.{r['command'].replace(' ', '_')}.txt")
        if os.path.exists(path):
            with open(path) as f:
                ops[r["command"]] = {k: int(v) for k, v in (l.split() for l in f if l.strip())
                                     if k != "total"}
    kinds = sorted({k for o in ops.values() for k in o}, key=lambda k: -sum(o.get(k, 0) for o in ops.values()))
    if ops and files:
        lines += ["", "Requests per file by operation (checked run; `getattr` includes LOOKUPs, "
                  "`readdir` counts READDIR and READDIRPLUS calls; one `getxattr` per file written is the "
                  "kernel's own security.capability check before the first write, not the copier's):", "",
                  "| command | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for cmd, o in ops.items():
            lines.append(f"| {code(cmd)} | " + " | ".join(f"{o.get(k, 0) / files:.2f}" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def main():
    d = sys.argv[1]
    env = read_kv(os.path.join(d, "env.txt"))
    out = ["# pcopy benchmark", ""]
    out.append(f"{env.get('date', '?')}: {env.get('pcopy', 'pcopy')} (git {env.get('git', '?')}); kernel "
               f"{env.get('kernel', '?')}, {env.get('cpus', '?')} CPUs, {env.get('mem', '?')}; corpora in "
               f"`{env.get('base', '?')}` ({env.get('fstype', '?')}); hyperfine {env.get('hyperfine', '?')}, "
               + (f"{env.get('rounds')} rounds of {env.get('runs', '?')} run(s) per command in turn, "
                  f"after {env.get('warmup', '?')} warmup"
                  if env.get("rounds", "1") != "1" else
                  f"{env.get('runs', '?')} runs after {env.get('warmup', '?')} warmup per command")
               + ("; page cache dropped before every run" if env.get("drop_caches") == "1" else "") + ".")
    out += ["", "ratio = mean time of `cp -a` / mean time of the command: above 1 is faster than `cp -a`. "
            "Peak RSS is `/usr/bin/time -f %M` of the pcopy run (its parent and every worker it reaped: the "
            "largest single process), with the parent's and the largest worker's VmHWM sampled from /proc "
            "beside it. check: exit status 0, `diff -r` clean, `rsync -rlptDni` (mode, times, links) clean.",
            ""]
    summary = []
    sections = []
    for name, desc in CORPORA:
        s = corpus_section(d, name, desc, summary)
        if s:
            sections.append(s)
    lat = latency_section(d)
    if lat:
        sections.append(lat)
    if summary:
        where = "" if env.get("fstype") == "tmpfs" else (
            f" (the targets are set for /dev/shm; this run is on {env.get('fstype', '?')})")
        out += [f"## Targets (issue 6): ratio cp -a / pcopy -j2{where}", "",
                "| corpus | mode | ratio | target | met |", "|---|---|---|---|---|"]
        for name, label, v, t in summary:
            out.append(f"| {name} | {label} | {v:.2f}x | >= {t:.1f}x | {'yes' if v >= t else '**no**'} |")
        out.append("")
    out += ["## Results", ""] + sections
    print("\n".join(out))


if __name__ == "__main__":
    main()
