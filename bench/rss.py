#!/usr/bin/env python3
"""Peak memory of one command and of every process it forks.

    rss.py OUT.json -- COMMAND [ARGS...]

Runs COMMAND under `/usr/bin/time -f %M` and, while it runs, samples VmHWM (peak resident set) of it and
of all its descendants from /proc every few milliseconds. Writes one JSON object to OUT.json:

  time_maxrss_kib   GNU time's %M: the largest peak RSS among COMMAND and every descendant that was reaped
                    (waited for) before COMMAND exited. The kernel folds a reaped child's peak into its
                    parent's "children" figure, and time(1) reports max(process, children). For pcopy,
                    whose parent reaps its workers, this is the peak of the largest pcopy process.
  parent_hwm_kib    the sampled VmHWM of COMMAND itself (the pcopy parent)
  child_hwm_kib     the largest sampled VmHWM among its descendants (the workers); a sampled lower bound:
                    a child that grows and exits between two samples is missed here (not in time's figure)
  processes         how many distinct processes were seen in the tree
  exit_status, wall_s
"""
import json
import os
import subprocess
import sys
import tempfile
import time


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces or parentheses, so split after the last ')'.
        rest = stat[stat.rfind(b")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(name))
    return kids


def hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: rss.py OUT.json -- COMMAND [ARGS...]")
    out, cmd = sys.argv[1], sys.argv[3:]
    with tempfile.NamedTemporaryFile("r", prefix="rss-", suffix=".txt") as tf:
        t0 = time.monotonic()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd)
        peaks = {}  # pid -> largest VmHWM seen
        parent = None
        while proc.poll() is None:
            kids = children_map()
            if parent is None and kids.get(proc.pid):
                parent = kids[proc.pid][0]
            if parent is not None:
                todo = [parent]
                while todo:
                    pid = todo.pop()
                    h = hwm_kib(pid)
                    if h is not None:
                        peaks[pid] = max(peaks.get(pid, 0), h)
                    todo.extend(kids.get(pid, []))
            time.sleep(0.005)
        wall = time.monotonic() - t0
        text = tf.read().strip().splitlines()
    try:
        time_max = int(text[-1])
    except (IndexError, ValueError):
        time_max = None
    result = {
        "command": cmd,
        "exit_status": proc.returncode,
        "wall_s": round(wall, 3),
        "time_maxrss_kib": time_max,
        "parent_hwm_kib": peaks.get(parent),
        "child_hwm_kib": max((v for k, v in peaks.items() if k != parent), default=None),
        "processes": len(peaks),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    # time(1) reports the command's own non-zero status in its first line(s); pass the status on.
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
