#!/usr/bin/env python3
"""Start-up cost of whole processes, interleaved run by run (exec to exit, as bench/attach.py
times pipe): `pipe --version` against /bin/true and any other commands.

Usage: bench/startup.py [-n N] CMD [CMD ...]     (each CMD one string, split on blanks)
  e.g. bench/startup.py -n 200 /bin/true 'target/release/pipe --version'
Prints median, p90 and min in ms, each command's ratio to the first, and the load.
"""
import argparse
import os
import statistics
import time


def timed(argv):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    os.waitpid(pid, 0)
    return (time.perf_counter_ns() - t0) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("cmds", nargs="+")
    a = ap.parse_args()
    cmds = [c.split() for c in a.cmds]
    for c in cmds:  # warm-up (page cache)
        timed(c)
    ts = [[] for _ in cmds]
    for _ in range(a.n):
        for i, c in enumerate(cmds):
            ts[i].append(timed(c))
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"start-up, whole process, n={a.n}, interleaved, load {load}")
    base = statistics.median(ts[0])
    for c, t in zip(a.cmds, ts):
        s = sorted(t)
        m = statistics.median(t)
        print(f"{c:<50} median {m:6.2f} ms  p90 {s[int(0.9 * (len(s) - 1))]:6.2f}  min {s[0]:6.2f}  x{m / base:.2f}")


if __name__ == "__main__":
    main()
