"""What the benchmark scripts share: the berth build to use, a `berth server` of their own
on free ports (fresh data dir, its own install id, network `berth-bench` unless told
otherwise), a JSON client for it, removal of everything it made (in batches), and the
measuring tools of scripts/bench.py and scripts/bench-edge.py: cgroup memory of containers,
CPU time and RSS from /proc, wrk, an nginx reverse proxy, Docker Engine API exec, a
scripted OpenAI-compatible model server, and a description of the machine."""
import http.client, json, os, platform, random, re, shutil, signal, socket, string, subprocess, sys, tempfile
import threading, time
import urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler

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

    def __init__(self, image, flags, build=None, prefix="berth-bench-", network="berth-bench", log=False, bins=None):
        """`log`: the server's output goes to `<data>/server.log` (else nowhere); `bins`:
        (profile, berth, agent) to run instead of `binaries(build)`."""
        self.profile, self.berth_bin, self.agent_bin = bins or binaries(build)
        self.port, self.edge_port = free_port(), free_port()
        self.admin, self.install = "sk_bench" + rand(32), "bench-" + rand(8)
        self.data = tempfile.mkdtemp(prefix=prefix)
        self.image, self.flags, self.network, self.log = image, list(flags), network, log
        self.base = f"http://127.0.0.1:{self.port}"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.start()

    def start(self):
        """Starts the server process (again, after `halt()`: same data, ports, key and install)."""
        env = dict(os.environ, BERTH_ADMIN_KEY=self.admin, BERTH_INSTALL_ID=self.install, RUST_LOG="warn")
        out = open(os.path.join(self.data, "server.log"), "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [self.berth_bin, "server", "--agent-templates", "none", "--data", self.data,
             "--listen", f"127.0.0.1:{self.port}", "--edge-listen", f"127.0.0.1:{self.edge_port}",
             "--base-image", self.image, "--agent-bin", self.agent_bin, "--network", self.network, *self.flags],
            env=env, stdout=out, stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, start_new_session=True)
        if self.log:
            out.close()

    def halt(self):
        """Stops the server process only (its containers stay)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.data, "server.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no server log)"

    def rss(self):
        return vm_rss(self.proc.pid)

    def metrics(self):
        """{metric line name with labels: value} of GET /metrics."""
        with self.opener.open(self.base + "/metrics", timeout=30) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def metric(self, prefix):
        """Sum of the metric lines whose name (with labels) starts with `prefix`."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

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

    def wait_ready(self, secs=10):
        for _ in range(int(secs * 10)):
            if self.proc.poll() is not None:
                sys.exit(f"berth server exited ({self.proc.returncode})\n{self.log_tail() if self.log else ''}")
            try:
                if self.call("GET", "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("berth server did not answer /healthz")

    def stop(self, remove_data=True, parallel=1):
        """Stops the server and removes its containers and volumes (in batches of 10,
        `parallel` batches at once) and, unless `remove_data` is False, its data dir with the
        homes' disk images (GBs a run: leaving them filled the disk)."""
        self.halt()
        for kind in (["ps", "-aq"], ["volume", "ls", "-q"]):
            ids = subprocess.run(["docker", *kind, "--filter", f"label=berth.install={self.install}"],
                                 capture_output=True, text=True).stdout.split()
            remove = ["rm", "-f"] if kind[0] == "ps" else ["volume", "rm", "-f"]
            # In batches: dockerd has locked up under hundreds of removals at once.
            remove_in_batches(remove, ids, 10, parallel)
        release_loops(self.data)
        if remove_data:
            shutil.rmtree(self.data, ignore_errors=True)


# ---------------------------------------------------------------- docker and /proc

BATCH = 8  # at most this many objects per docker call: hundreds at once have locked dockerd up
MIB = 1024 * 1024


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def docker(*args, check=True, timeout=180):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def remove_in_batches(command, ids, batch=BATCH, parallel=1):
    """`docker <command> <ids...>` (e.g. ["rm", "-f"]) in batches of `batch`, at most
    `parallel` calls at once."""
    chunks = [ids[i:i + batch] for i in range(0, len(ids), batch)]

    def work():
        while True:
            try:
                chunk = chunks.pop()
            except IndexError:
                return
            subprocess.run(["docker", *command, *chunk], capture_output=True)
    threads = [threading.Thread(target=work) for _ in range(max(1, parallel))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def vm_rss(pid):
    """Resident memory (bytes) of a process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_secs(pids):
    """User + system CPU seconds of processes (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def mem_available():
    """MemAvailable of /proc/meminfo, bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


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
    """({cid: (usage, anon)}, source) of containers (ids or names); falls back to
    `docker stats --no-stream` where no cgroup file is found."""
    out, source, missing = {}, None, []
    pids = {}
    for i in range(0, len(cids), BATCH):
        for line in docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", *cids[i:i + BATCH]).splitlines():
            cid, pid = line.split()
            pids[cid] = pid
    for cid, pid in pids.items():
        got = cgroup_memory(cid, pid)
        if got is None:
            missing.append(cid)
            continue
        out[cid] = got[:2]
        source = got[2]
    for i in range(0, len(missing), BATCH):
        text = docker("stats", "--no-stream", "--no-trunc", "--format", "{{.ID}} {{.MemUsage}}", *missing[i:i + BATCH])
        for line in text.splitlines():
            cid, usage = line.split(" ", 1)
            out[cid] = (parse_size(usage.split("/")[0]), None)
            source = (source + " + " if source and "docker stats" not in source else "") + "docker stats"
    return out, source


def container_ip(name):
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return docker("inspect", "-f", fmt, name)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path="/var/run/docker.sock"):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def docker_api(method, path, body=None):
    """(status, body bytes) of one Docker Engine API call on /var/run/docker.sock."""
    c = UnixHTTP()
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def docker_api_exec(container, cmd=("true",)):
    """Exit code of `cmd` run in `container` through the Engine API, as a client does it:
    create, start attached (read to the end), inspect."""
    st, data = docker_api("POST", f"/containers/{container}/exec",
                          {"Cmd": list(cmd), "AttachStdout": True, "AttachStderr": True})
    exec_id = json.loads(data)["Id"]
    docker_api("POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": False})
    st, data = docker_api("GET", f"/exec/{exec_id}/json")
    return json.loads(data)["ExitCode"]


# ---------------------------------------------------------------- HTTP load and proxies


def wrk(url, headers, secs, conns):
    """{rps, p50, p99 (ms), non2xx, requests} of `wrk -t1 -c<conns> -d<secs>s --latency`."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", url]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def pct_(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        return float(m.group(1)) * unit[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": pct_(50), "p99": pct_(99), "non2xx": int(errors.group(1)) if errors else 0,
            "requests": total}


class Nginx:
    """Debian's nginx as a keep-alive reverse proxy to `upstream` (host:port) on a free
    port: proxy_http_version 1.1, upstream keepalive, access log off."""

    def __init__(self, upstream, tmp, workers="auto"):
        self.port = free_port()
        self.tmp = tmp
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  upstream agent {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://agent;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)

    def pids(self):
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return [self.proc.pid] + [int(p) for p in kids]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def streamed_turn(server, label, body, timeout=300):
    """(ms to the first text delta, ms to the end) of one streamed `POST /v1/responses`
    through the edge to instance `label`; RuntimeError when it ends without text."""
    req = urllib.request.Request(f"http://127.0.0.1:{server.edge_port}/v1/responses", method="POST",
                                 data=json.dumps(dict(body, stream=True)).encode(),
                                 headers={"Host": f"{label}.localhost:{server.edge_port}",
                                          "Authorization": f"Bearer {server.admin}",
                                          "Content-Type": "application/json"})
    t0 = time.perf_counter()
    first, last = None, None
    with server.opener.open(req, timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if line == "event: response.output_text.delta" and first is None:
                first = time.perf_counter()
            if line.startswith("event: response."):
                last = line
    if first is None or last != "event: response.completed":
        raise RuntimeError(f"the turn through {label} ended with {last} and no text")
    return (first - t0) * 1000, (time.perf_counter() - t0) * 1000


def http_first_byte(host_port, host_header, path, headers=()):
    """Seconds from sending a GET to reading the first byte of the answer."""
    h, p = host_port
    with socket.create_connection((h, p), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n" + "".join(f"{x}\r\n" for x in headers) + "\r\n"
        t0 = time.perf_counter()
        s.sendall(req.encode())
        first = s.recv(1)
        took = time.perf_counter() - t0
        assert first, "no answer"
        return took


class ChatUpstream(BaseHTTPRequestHandler):
    """A scripted OpenAI-compatible model: every POST answers a streamed chat completion
    of `n_tokens` (from the body, else `tokens`) chunks of "tok " as SSE, chunked,
    HTTP/1.1; `burst`: the whole answer in one write; `pace_ms`: a pause after each."""
    protocol_version = "HTTP/1.1"
    tokens = 500

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = body.get("n_tokens", self.tokens)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        burst = body.get("burst", False)
        pace = body.get("pace_ms", 0) / 1000
        pending = []

        def send(data):
            ev = f"data: {data}\n\n".encode()
            if burst:  # the whole answer in one write
                pending.append(ev)
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.wfile.flush()
            if pace:
                time.sleep(pace)

        chunk = json.dumps({"id": "c", "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]})
        for _ in range(n):
            send(chunk)
        if body.get("stream_options", {}).get("include_usage"):
            send(json.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n}}))
        send("[DONE]")
        if pending:
            all_ = b"".join(pending)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(all_), all_))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# ---------------------------------------------------------------- reporting


def machine():
    """{what: description} of this machine and build."""
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or "?"
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
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": mem,
        "kernel": platform.release(),
        "docker": sh(["docker", "version", "--format",
                      "client {{.Client.Version}}, server {{.Server.Version}} (API {{.Server.APIVersion}})"]),
        "cgroups": sh(["docker", "info", "--format", "v{{.CgroupVersion}}, driver {{.CgroupDriver}}"]),
        "berth_commit": sh(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
    }
