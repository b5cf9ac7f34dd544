#!/usr/bin/env python3
"""Control-plane benchmark: berth figures beside plain-Docker baselines measured in the same run.

  1. create->running latency (p50/p95 over N sequential `POST /v1/instances`, each answered
     201 once the instance runs and its agent answers /health), beside N sequential
     `docker run -d` of the same image with the same agent bind-mounted read-only as the
     command (same --init, same network) followed by polling the agent's /health.
  2. idle memory per instance (cgroup) with M running berth instances, beside M plain
     `sleep 3600` containers of the same image.
  3. the berth server's own RSS, idle at start and with M instances.

It starts its own `berth server` (release build) on free ports with a fresh data dir and
install id, and removes everything it made at the end (also on Ctrl-C or an error) unless
--keep is given. Python 3 standard library only.

    scripts/bench-control-plane.py                      # busybox, N=20, M=50
    scripts/bench-control-plane.py --image berth/base:bookworm --instances 20
"""

import argparse
import http.client
import json
import math
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from benchlib import release_loops  # scripts/ is on sys.path when run as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_PATH = "/opt/berth/bin/berth-agent"  # where berth mounts the agent (crates/runtime/src/docker.rs)
AGENT_PORT = 3737
BATCH = 8  # at most this many objects per docker call: hundreds at once have locked dockerd up
BENCH_LABEL = "berth-bench.run"  # baseline containers; never berth.install, or the reconciler removes them
MIB = 1024 * 1024


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def docker(*args, check=True, timeout=180):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------- cgroup memory


def _read_int(path):
    with open(path) as f:
        return int(f.read().strip())


def _memory_stat(path, keys):
    try:
        with open(path) as f:
            stat = dict(line.split() for line in f if line.strip())
    except OSError:
        return None
    for k in keys:
        if k in stat:
            return int(stat[k])
    return None


def cgroup_memory(cid, pid):
    """(usage bytes, anon bytes or None, source) from the container's memory cgroup."""
    dirs = [
        (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope", 2),
        (f"/sys/fs/cgroup/docker/{cid}", 2),
        (f"/sys/fs/cgroup/memory/docker/{cid}", 1),
        (f"/sys/fs/cgroup/memory/system.slice/docker-{cid}.scope", 1),
    ]
    # Whatever the layout, /proc/<pid>/cgroup names the container's own cgroup.
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if ctrls == "" and line.startswith("0::"):
                    dirs.append((f"/sys/fs/cgroup{path}", 2))
                elif "memory" in ctrls.split(","):
                    dirs.append((f"/sys/fs/cgroup/memory{path}", 1))
    except (OSError, ValueError):
        pass
    for d, v in dirs:
        if v == 2 and os.path.isfile(f"{d}/memory.current"):
            anon = _memory_stat(f"{d}/memory.stat", ["anon"])
            return _read_int(f"{d}/memory.current"), anon, "cgroup v2 memory.current"
        if v == 1 and os.path.isfile(f"{d}/memory.usage_in_bytes"):
            anon = _memory_stat(f"{d}/memory.stat", ["total_rss", "rss"])
            return _read_int(f"{d}/memory.usage_in_bytes"), anon, "cgroup v1 memory.usage_in_bytes"
    return None


def parse_size(text):
    units = {"B": 1, "KIB": 1024, "MIB": MIB, "GIB": 1024 * MIB, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
    text = text.strip()
    for u in sorted(units, key=len, reverse=True):
        if text.upper().endswith(u):
            return float(text[: -len(u)]) * units[u]
    return float(text)


def container_memory(cids):
    """{cid: (usage, anon)} and the source used; falls back to `docker stats --no-stream`."""
    out, source, missing = {}, None, []
    pids = {}
    for i in range(0, len(cids), BATCH):
        chunk = cids[i : i + BATCH]
        for line in docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", *chunk).splitlines():
            cid, pid = line.split()
            pids[cid] = pid
    for cid in cids:
        got = cgroup_memory(cid, pids.get(cid, "0"))
        if got is None:
            missing.append(cid)
            continue
        out[cid] = got[:2]
        source = got[2]
    for i in range(0, len(missing), BATCH):
        chunk = missing[i : i + BATCH]
        text = docker("stats", "--no-stream", "--no-trunc", "--format", "{{.ID}} {{.MemUsage}}", *chunk)
        for line in text.splitlines():
            cid, usage = line.split(" ", 1)
            out[cid] = (parse_size(usage.split("/")[0]), None)
            source = (source + " + " if source else "") + "docker stats"
    return out, source


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, args):
        self.args = args
        self.install = "bench-" + secrets.token_hex(5)
        self.key = "sk_" + secrets.token_urlsafe(24).replace("-", "a").replace("_", "b")
        self.tmp = tempfile.mkdtemp(prefix="berth-bench-")
        self.server = None
        self.port = None
        self.network_existed = True
        self.baseline_seq = 0

    # --- server -----------------------------------------------------------

    def start_server(self):
        a = self.args
        self.agent = os.path.join(self.tmp, "berth-agent")
        # A private copy, so a rebuild elsewhere cannot change the binary mid-run;
        # berth and the baseline mount the very same file.
        shutil.copy2(a.agent_bin, self.agent)
        os.chmod(self.agent, 0o755)
        self.port = free_port()
        edge = free_port()
        cmd = [
            a.berth_bin, "server", "--agent-templates", "none",
            "--data", os.path.join(self.tmp, "data"),
            "--listen", f"127.0.0.1:{self.port}",
            "--edge-listen", f"127.0.0.1:{edge}",
            "--base-image", a.image,
            "--agent-bin", self.agent,
            "--network", a.network,
        ]
        env = dict(os.environ, BERTH_ADMIN_KEY=self.key, BERTH_INSTALL_ID=self.install)
        self.server_log = open(os.path.join(self.tmp, "server.log"), "wb")
        log(f"starting {' '.join(shlex.quote(c) for c in cmd)}")
        # Own session: Ctrl-C reaches only us, and we stop the server in order.
        self.server = subprocess.Popen(cmd, env=env, stdout=self.server_log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"berth server exited ({self.server.returncode}):\n{self.server_tail()}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"berth server did not answer /healthz within 60 s:\n{self.server_tail()}")

    def server_tail(self):
        try:
            with open(os.path.join(self.tmp, "server.log"), errors="replace") as f:
                return "".join(f.readlines()[-30:])
        except OSError:
            return "(no log)"

    def request(self, method, path, body=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {self.key}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def berth_create(self):
        t0 = time.perf_counter()
        status, raw = self.request("POST", "/v1/instances", body=b"{}")
        dt = time.perf_counter() - t0
        if status != 201:
            raise RuntimeError(f"POST /v1/instances answered {status}: {raw[:500]!r}\n{self.server_tail()}")
        inst = json.loads(raw)
        if inst.get("status") != "running":
            raise RuntimeError(f"created instance is {inst.get('status')!r}, not running")
        return dt

    # --- baselines --------------------------------------------------------

    def baseline_name(self, kind):
        self.baseline_seq += 1
        return f"{self.install}-{kind}-{self.baseline_seq}"

    def baseline_agent_run(self):
        """`docker run -d` of the agent as berth runs it, then poll /health; seconds to the first 200."""
        a = self.args
        t0 = time.perf_counter()
        cid = docker(
            "run", "-d", "--init", "--network", a.network,
            "--name", self.baseline_name("agent"), "--label", f"{BENCH_LABEL}={self.install}",
            "-v", f"{self.agent}:{AGENT_PATH}:ro", "--entrypoint", AGENT_PATH,
            a.image, "--listen", f"0.0.0.0:{AGENT_PORT}", "--data", "/tmp/berth-agent-data",
        )
        ip = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{a.network}").IPAddress}}}}', cid)
        url = f"http://{ip}:{AGENT_PORT}/health"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (OSError, urllib.error.URLError, http.client.HTTPException):
                pass
            time.sleep(0.015)
        raise RuntimeError(f"baseline agent {cid[:12]} did not answer {url} within 60 s")

    def baseline_sleep_run(self):
        a = self.args
        docker("run", "-d", "--init", "--network", a.network,
               "--name", self.baseline_name("sleep"), "--label", f"{BENCH_LABEL}={self.install}",
               a.image, "sleep", "3600")

    # --- listing and cleanup ---------------------------------------------

    def ids(self, label, running_only=False):
        args = ["ps", "-q", "--no-trunc", "--filter", f"label={label}"]
        if not running_only:
            args.insert(1, "-a")
        return docker(*args).split()

    def berth_ids(self, running_only=True):
        return self.ids(f"berth.install={self.install}", running_only)

    def baseline_ids(self, kind=None, running_only=False):
        ids = self.ids(f"{BENCH_LABEL}={self.install}", running_only)
        if kind is None:
            return ids
        names = {}
        for i in range(0, len(ids), BATCH):
            for line in docker("inspect", "-f", "{{.Id}} {{.Name}}", *ids[i : i + BATCH]).splitlines():
                cid, name = line.split()
                names[cid] = name
        return [c for c in ids if f"-{kind}-" in names.get(c, "")]

    def remove_containers(self, ids):
        for i in range(0, len(ids), BATCH):
            docker("rm", "-f", *ids[i : i + BATCH], check=False)

    def cleanup(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.args.keep:
            log("--keep: leaving everything in place")
            if self.server and self.server.poll() is None:
                print(f"\nkept: berth server pid {self.server.pid} at http://127.0.0.1:{self.port} "
                      f"(key {self.key}), data {self.tmp}")
            print(f"to clean up: kill {self.server.pid if self.server else ''}; "
                  f"docker rm -f $(docker ps -aq --filter label=berth.install={self.install} "
                  f"--filter label={BENCH_LABEL}={self.install}); "
                  f"docker volume rm $(docker volume ls -q --filter label=berth.install={self.install}); "
                  f"rm -rf {self.tmp}")
            return
        log("cleaning up")
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        try:
            self.remove_containers(self.ids(f"berth.install={self.install}") + self.ids(f"{BENCH_LABEL}={self.install}"))
            vols = docker("volume", "ls", "-q", "--filter", f"label=berth.install={self.install}").split()
            for i in range(0, len(vols), BATCH):
                docker("volume", "rm", "-f", *vols[i : i + BATCH], check=False)
            if not self.network_existed:
                docker("network", "rm", self.args.network, check=False)
        except Exception as e:  # noqa: BLE001 - report, keep going
            log(f"cleanup: {e}")
        release_loops(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)
        log("cleaned up")

    # --- phases ------------------------------------------------------------

    def run(self):
        a = self.args
        self.network_existed = subprocess.run(["docker", "network", "inspect", a.network],
                                              capture_output=True).returncode == 0
        self.start_server()
        time.sleep(2)
        rss_idle = vm_rss(self.server.pid)
        log(f"server up on 127.0.0.1:{self.port}, install {self.install}, RSS {rss_idle / MIB:.1f} MiB")

        # 1. create -> running, interleaved so drift on a shared machine hits both alike.
        log("warm-up: one berth create and one baseline run (not counted)")
        self.berth_create()
        self.baseline_agent_run()
        berth_lat, base_lat = [], []
        for i in range(a.creates):
            if i % 2 == 0:
                berth_lat.append(self.berth_create())
                base_lat.append(self.baseline_agent_run())
            else:
                base_lat.append(self.baseline_agent_run())
                berth_lat.append(self.berth_create())
            log(f"create {i + 1}/{a.creates}: berth {berth_lat[-1] * 1000:.0f} ms, "
                f"docker run + /health {base_lat[-1] * 1000:.0f} ms")
        self.remove_containers(self.baseline_ids("agent"))

        # 2. M berth instances and M sleep containers, idle, then their cgroups.
        have = len(self.berth_ids())
        log(f"{have} berth instances running; creating {max(0, a.instances - have)} more")
        while len(self.berth_ids()) < a.instances:
            for _ in range(a.instances - len(self.berth_ids())):
                self.berth_create()
        log(f"starting {a.instances} sleep containers")
        for _ in range(a.instances):
            self.baseline_sleep_run()
        log(f"idling {a.idle_secs} s")
        time.sleep(a.idle_secs)
        berth_ids, sleep_ids = self.berth_ids(), self.baseline_ids("sleep", running_only=True)
        if len(berth_ids) < a.instances or len(sleep_ids) < a.instances:
            raise RuntimeError(f"only {len(berth_ids)} berth / {len(sleep_ids)} sleep containers running")
        berth_mem, src1 = container_memory(berth_ids)
        sleep_mem, src2 = container_memory(sleep_ids)
        rss_loaded = vm_rss(self.server.pid)

        return dict(berth_lat=berth_lat, base_lat=base_lat, berth_mem=berth_mem, sleep_mem=sleep_mem,
                    mem_source=src1 if src1 == src2 else f"{src1} / {src2}", rss_idle=rss_idle,
                    rss_loaded=rss_loaded, n_berth=len(berth_ids), n_sleep=len(sleep_ids))


# ---------------------------------------------------------------- report


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return [
        ("nproc", f"{os.cpu_count()} ({cpu}), {mem} RAM"),
        ("kernel", platform.release()),
        ("docker", sh(["docker", "version", "--format",
                       "client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})"])),
        ("cgroups", sh(["docker", "info", "--format", "v{{.CgroupVersion}}, driver {{.CgroupDriver}}"])),
        ("berth", sh(["git", "-C", ROOT, "describe", "--always", "--dirty"])),
    ]


def table(rows):
    head = ("metric", "berth", "baseline", "ratio")
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
    line = "-+-".join("-" * x for x in w)
    out = [" | ".join(str(h).ljust(w[i]) for i, h in enumerate(head)), line]
    for r in rows:
        out.append(" | ".join(str(c).ljust(w[0]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r)))
    return "\n".join(out)


def report(args, res):
    def ratio(b, base):
        return f"{b / base:.2f}x" if base else "-"

    bl, dl = [x * 1000 for x in res["berth_lat"]], [x * 1000 for x in res["base_lat"]]
    rows = []
    for name, f in (("p50", lambda v: percentile(v, 50)), ("p95", lambda v: percentile(v, 95)),
                    ("mean", statistics.mean), ("max", max)):
        b, d = f(bl), f(dl)
        rows.append((f"create->running {name} (ms, N={len(bl)})", f"{b:.0f}", f"{d:.0f}", ratio(b, d)))
    bu = [m[0] / MIB for m in res["berth_mem"].values()]
    su = [m[0] / MIB for m in res["sleep_mem"].values()]
    for name, f in (("mean", statistics.mean), ("median", statistics.median)):
        b, d = f(bu), f(su)
        rows.append((f"idle memory/instance {name} (MiB)", f"{b:.2f}", f"{d:.2f}", ratio(b, d)))
    ba = [m[1] / MIB for m in res["berth_mem"].values() if m[1] is not None]
    sa = [m[1] / MIB for m in res["sleep_mem"].values() if m[1] is not None]
    if ba and sa:
        for name, f in (("mean", statistics.mean), ("median", statistics.median)):
            b, d = f(ba), f(sa)
            rows.append((f"  of which anon/rss {name} (MiB)", f"{b:.2f}", f"{d:.2f}", ratio(b, d)))
    ri, rl = res["rss_idle"] / MIB, res["rss_loaded"] / MIB
    rows.append(("server RSS idle at start (MiB)", f"{ri:.1f}", "-", "-"))
    rows.append((f"server RSS with {res['n_berth']} instances (MiB)", f"{rl:.1f}", "-", "-"))
    rows.append(("server RSS growth per instance (KiB)", f"{(rl - ri) * 1024 / res['n_berth']:.0f}", "-", "-"))

    print()
    print("command:  " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]]))
    for k, v in machine():
        print(f"{k + ':':<9} {v}")
    print(f"image:    {args.image}   N={args.creates} sequential creates (+1 warm-up each, not counted), "
          f"M={args.instances} idle {args.idle_secs} s")
    print(f"baseline: create = `docker run -d --init --network {args.network}` + agent bind-mounted :ro as the "
          f"command, then GET http://<ip>:{AGENT_PORT}/health every 15 ms until 200 (incl. `docker inspect` for "
          f"the ip); memory = {res['n_sleep']} x `docker run -d --init {args.image} sleep 3600`")
    print(f"memory:   {res['mem_source']}, per container; anon/rss from memory.stat")
    print()
    print(table(rows))
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="berth-test/busybox:latest", help="image for berth and the baselines")
    p.add_argument("--creates", type=int, default=20, metavar="N", help="sequential creates timed (default 20)")
    p.add_argument("--instances", type=int, default=50, metavar="M", help="idle instances for memory (default 50)")
    p.add_argument("--idle-secs", type=float, default=10, help="idle time before reading memory (default 10)")
    p.add_argument("--keep", action="store_true", help="leave the server, containers and volumes in place")
    p.add_argument("--network", default="berth-bench", help="bridge network for everything (default berth-bench)")
    p.add_argument("--berth-bin", default=os.path.join(ROOT, "target/release/berth"))
    p.add_argument("--agent-bin", default=os.path.join(ROOT, "target/static-agent/x86_64-unknown-linux-gnu/release/berth-agent"))
    args = p.parse_args()
    if args.creates < 1 or args.instances < 1:
        p.error("--creates and --instances must be at least 1")
    for path, how in ((args.berth_bin, "cargo build --release -p berth-cli"),
                      (args.agent_bin, "scripts/build-agent.sh --release")):
        if not os.path.isfile(path):
            p.error(f"{path} not found; build it with: {how}")
    if docker("image", "inspect", "-f", "{{.Id}}", args.image, check=False) == "":
        p.error(f"image {args.image} is not present locally")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (e.g. `&` in a script): Ctrl-C must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    bench = Bench(args)
    try:
        res = bench.run()
        report(args, res)
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        log(f"failed: {e}")
        return 1
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
