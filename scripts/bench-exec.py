#!/usr/bin/env python3
"""Exec round-trip benchmark (issue 5): berth's POST /v1/instances/{id}/exec of `true`
beside the Docker Engine API's own exec round trip (create + start attached + inspect)
and the `docker exec` CLI, on the same container, in the same run.

    scripts/bench-exec.py [--runs N] [--image IMAGE]

Needs target/release/berth and the static release agent
(target/static-agent/x86_64-unknown-linux-gnu/release/berth-agent), a running dockerd and the image.
"""
import argparse, http.client, json, os, random, shutil, socket, statistics, string, subprocess, sys, tempfile, time, urllib.request

from benchlib import release_loops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rand(n):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def docker_api(method, path, body=None):
    c = UnixHTTP("/var/run/docker.sock")
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def docker_api_exec(container):
    st, data = docker_api("POST", f"/containers/{container}/exec",
                          {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True})
    exec_id = json.loads(data)["Id"]
    docker_api("POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": False})
    st, data = docker_api("GET", f"/exec/{exec_id}/json")
    return json.loads(data)["ExitCode"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--image", default="berth-test/busybox:latest")
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    berth = os.path.join(target, "release/berth")
    agent = os.path.join(target, "static-agent/x86_64-unknown-linux-gnu/release/berth-agent")
    for p in (berth, agent):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: cargo build --release -p berth-cli && scripts/build-agent.sh --release")
    data = tempfile.mkdtemp(prefix="berth-bench-exec-")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    key, install = "sk_bench" + rand(32), "bench-" + rand(8)
    env = dict(os.environ, BERTH_ADMIN_KEY=key, BERTH_INSTALL_ID=install, RUST_LOG="warn")
    server = subprocess.Popen([berth, "server", "--agent-templates", "none", "--data", data, "--listen", f"127.0.0.1:{port}",
                               "--base-image", args.image, "--agent-bin", agent, "--network", "berth-bench"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(method, path, body=None):
        req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with opener.open(req, timeout=120) as r:
            return json.loads(r.read() or b"null")

    try:
        for _ in range(200):
            try:
                opener.open(base + "/healthz", timeout=1).read(); break
            except Exception:
                time.sleep(0.05)
        inst = call("POST", "/v1/instances", {})
        cid = f"berth-{inst['id']}"
        samples = {"berth POST /exec": [], "Docker API exec": [], "docker exec CLI": []}
        for _ in range(3):  # warm-up
            call("POST", f"/v1/instances/{inst['id']}/exec", {"command": ["true"]}); docker_api_exec(cid)
        for _ in range(args.runs):
            t = time.perf_counter(); r = call("POST", f"/v1/instances/{inst['id']}/exec", {"command": ["true"]})
            samples["berth POST /exec"].append((time.perf_counter() - t) * 1000); assert r["exit_code"] == 0
            t = time.perf_counter(); assert docker_api_exec(cid) == 0
            samples["Docker API exec"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter(); subprocess.run(["docker", "exec", cid, "true"], check=True)
            samples["docker exec CLI"].append((time.perf_counter() - t) * 1000)
        print(f"# exec round trip of `true`, {args.runs} runs each, interleaved; image {args.image}; nproc {os.cpu_count()}")
        api50 = statistics.median(samples["Docker API exec"])
        print(f"{'path':<20} {'p50 ms':>8} {'p95 ms':>8} {'p50 vs API':>11}")
        for name, xs in samples.items():
            print(f"{name:<20} {statistics.median(xs):8.1f} {pct(xs, 95):8.1f} {statistics.median(xs) / api50:10.2f}x")
    finally:
        server.kill(); server.wait()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=berth.install={install}"], capture_output=True, text=True).stdout.split()
        for i in range(0, len(ids), 8):
            subprocess.run(["docker", "rm", "-f", *ids[i:i + 8]], capture_output=True)
        vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=berth.install={install}"], capture_output=True, text=True).stdout.split()
        for i in range(0, len(vols), 8):
            subprocess.run(["docker", "volume", "rm", "-f", *vols[i:i + 8]], capture_output=True)
        release_loops(data)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
