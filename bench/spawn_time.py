#!/usr/bin/env python3
"""Time one CNI plugin call the way a runtime makes it: the plugin exec'd with CNI_COMMAND set
and the network configuration written to its stdin through a pipe, timed from spawn to exit
(not through a shell's `$(...)` and here-string, which cost a fork and a temporary file each).

Usage: bench/spawn_time.py COMMAND PLUGIN CONFIG   (the other CNI_* variables from the environment)
Prints the microseconds; on failure the plugin's output on stderr and exit status 1.
"""
import os
import sys
import time


def main():
    command, plugin, conf = sys.argv[1:4]
    env = dict(os.environ, CNI_COMMAND=command)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(plugin, [plugin], env, file_actions=[
        (os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_CLOSE, in_w), (os.POSIX_SPAWN_CLOSE, out_r)])
    os.close(in_r)
    os.close(out_w)
    os.write(in_w, conf.encode())
    os.close(in_w)
    out = b""
    while chunk := os.read(out_r, 65536):
        out += chunk
    _, status = os.waitpid(pid, 0)
    t1 = time.perf_counter_ns()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.stderr.write(out.decode(errors="replace") + "\n")
        sys.exit(1)
    print((t1 - t0) // 1000)


if __name__ == "__main__":
    main()
