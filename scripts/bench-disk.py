#!/usr/bin/env python3
"""Disk quotas (issue 10), one run, two servers side by side:

  1. create latency (p50, p90) with loop-backed homes (`--disk-quota loop`) beside
     plain Docker volumes (`--disk-quota off`), creates alternating between the two
     so both see the same machine (goal: loop p50 <= 1.2 x plain);
  2. how long a size-1 instance takes to fill its 10 GiB home until ENOSPC (dd, 4 MiB
     blocks), and what the host's free space lost meanwhile.

    scripts/bench-disk.py [--image IMAGE] [--creates N] [--build release|debug]

Uses the release build when there is one (else debug; CARGO_TARGET_DIR is honoured),
a running dockerd, root and loop devices.
"""
import argparse, shutil, time

from benchlib import Server, pct


def create(server):
    started = time.monotonic()
    st, inst = server.call("POST", "/v1/instances", {"size": 1})
    took = (time.monotonic() - started) * 1000
    if st != 201:
        raise SystemExit(f"create failed ({st}): {inst}")
    return inst["id"], took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default="berth-test/busybox:latest")
    ap.add_argument("--creates", type=int, default=20)
    ap.add_argument("--build", choices=["release", "debug"])
    args = ap.parse_args()
    plain = Server(args.image, ["--disk-quota", "off"], args.build)
    quota = Server(args.image, ["--disk-quota", "loop"], args.build)
    try:
        plain.wait_ready()
        quota.wait_ready()
        times = {"plain": [], "loop": []}
        made = {"plain": [], "loop": []}
        for server in (plain, quota):  # one warm-up create each, not counted
            made["plain" if server is plain else "loop"].append(create(server)[0])
        for i in range(args.creates):
            order = [("plain", plain), ("loop", quota)] if i % 2 == 0 else [("loop", quota), ("plain", plain)]
            for name, server in order:
                iid, took = create(server)
                times[name].append(took)
                made[name].append(iid)
        print(f"berth {plain.profile} build, {args.creates} creates each, size 1, alternating")
        print(f"{'homes':<24}{'create p50 ms':>14}{'p90 ms':>10}")
        for name, label in (("plain", "plain volume (off)"), ("loop", "loop ext4 10 GiB (loop)")):
            print(f"{label:<24}{pct(times[name], 50):>14.0f}{pct(times[name], 90):>10.0f}")
        print(f"ratio loop/plain p50: {pct(times['loop'], 50) / pct(times['plain'], 50):.2f} (goal <= 1.2)")
        for name, server in (("plain", plain), ("loop", quota)):
            for iid in made[name]:
                server.call("DELETE", f"/v1/instances/{iid}?purge=true")

        iid, _ = create(quota)
        free_before = shutil.disk_usage("/tmp").free
        started = time.monotonic()
        st, out = quota.call("POST", f"/v1/instances/{iid}/exec", {
            "command": "dd if=/dev/zero of=/home/agent/fill bs=4M 2>&1 | tail -1; df -k /home/agent | tail -1",
            "timeout_secs": 1800})
        took = time.monotonic() - started
        lost = (free_before - shutil.disk_usage("/tmp").free) / 2**30
        print(f"fill a 10 GiB home until ENOSPC: {took:.1f} s; host free space lost {lost:.2f} GiB")
        print("  " + " | ".join(line.strip() for line in out.get("stdout", "").splitlines()))
        quota.call("DELETE", f"/v1/instances/{iid}?purge=true")
    finally:
        plain.stop()
        quota.stop()


if __name__ == "__main__":
    main()
