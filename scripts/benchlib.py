"""What scripts/bench-fairness.py and scripts/bench-limits.py share: the berth build to
use, a `berth server` of their own on free ports (fresh data dir, its own install id,
network `berth-bench`), a JSON client for it, and removal of everything it made."""
import json, os, random, socket, string, subprocess, sys, tempfile, time
import urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rand(n):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def binaries(only=None):
    """(profile, berth, agent): the release build if there is one, else debug (or `only`)."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    for profile in (only,) if only else ("release", "debug"):
        berth = os.path.join(target, f"{profile}/berth")
        agent = os.path.join(target, f"static-agent/x86_64-unknown-linux-gnu/{profile}/berth-agent")
        if os.path.exists(berth) and os.path.exists(agent):
            return profile, berth, agent
    sys.exit("no berth build: cargo build --release -p berth-cli && scripts/build-agent.sh --release")


def release_loops(data_dir):
    """Detaches the loop devices backed by home images under `data_dir` (the server's
    containers and volumes were removed behind its back, so it never purged them)."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].startswith(data_dir.rstrip("/") + "/"):
            subprocess.run(["losetup", "--detach", parts[0]], capture_output=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """A `berth server` for one benchmark run; `stop()` removes all it made."""

    def __init__(self, image, flags, build=None, prefix="berth-bench-"):
        self.profile, berth, agent = binaries(build)
        self.port, self.edge_port = free_port(), free_port()
        self.admin, self.install = "sk_bench" + rand(32), "bench-" + rand(8)
        env = dict(os.environ, BERTH_ADMIN_KEY=self.admin, BERTH_INSTALL_ID=self.install, RUST_LOG="warn")
        self.data = tempfile.mkdtemp(prefix=prefix)
        self.proc = subprocess.Popen(
            [berth, "server", "--agent-templates", "none", "--data", self.data, "--listen", f"127.0.0.1:{self.port}",
             "--edge-listen", f"127.0.0.1:{self.edge_port}", "--base-image", image, "--agent-bin", agent,
             "--network", "berth-bench", *flags],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method, path, body=None, key=None, timeout=300):
        """(status, JSON answer) of one API call, with `key` (default: the admin key)."""
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {key or self.admin}",
                                              "Content-Type": "application/json"})
        try:
            with self.opener.open(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait_ready(self):
        for _ in range(100):
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("berth server did not answer /healthz")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for kind in (["ps", "-aq"], ["volume", "ls", "-q"]):
            ids = subprocess.run(["docker", *kind, "--filter", f"label=berth.install={self.install}"],
                                 capture_output=True, text=True).stdout.split()
            remove = ["rm", "-f"] if kind[0] == "ps" else ["volume", "rm", "-f"]
            # In batches: dockerd has locked up under hundreds of removals at once.
            for i in range(0, len(ids), 10):
                subprocess.run(["docker", *remove, *ids[i:i + 10]], capture_output=True)
        release_loops(self.data)
