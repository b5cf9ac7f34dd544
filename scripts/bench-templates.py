#!/usr/bin/env python3
"""Templates (issue 12), one run, one server:

  1. build time of a Dockerfile template that installs a package from PyPI (through
     the CA bundle), cold (a fresh first layer) and cached (the same Dockerfile again),
     beside `docker build` of the same Dockerfile and context in the same run;
  2. create p50/p90 of instances from the system template, from a custom template of
     the same image, and from the built template, creates alternating between them.

    scripts/bench-templates.py [--base IMAGE] [--creates N] [--build release|debug]

Uses the release build when there is one (else debug; CARGO_TARGET_DIR is honoured)
and a running dockerd; the base image must be local (scripts/build-images.sh).
"""
import argparse, base64, io, json, os, subprocess, tarfile, tempfile, time, urllib.request

from benchlib import Server, pct, rand

INSTALL = """
import io, json, site, urllib.request, zipfile
meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/six/json", timeout=120))
url = next(f["url"] for f in meta["urls"] if f["packagetype"] == "bdist_wheel")
wheel = urllib.request.urlopen(url, timeout=120).read()
zipfile.ZipFile(io.BytesIO(wheel)).extractall(site.getsitepackages()[0])
print("installed six", meta["info"]["version"])
"""


def context_b64():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = INSTALL.encode()
        info = tarfile.TarInfo("install.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def dockerfile(base, nonce):
    return (f"FROM {base}\nRUN echo {nonce}\nCOPY install.py /opt/install.py\n"
            "RUN python3 /opt/install.py\n")


def follow_build(server, tid, version):
    """Seconds from now until the build's log stream ends; its final status."""
    req = urllib.request.Request(f"{server.base}/v1/templates/{tid}/builds/{version}/logs?follow=true",
                                 headers={"Authorization": f"Bearer {server.admin}"})
    status = None
    with server.opener.open(req, timeout=1800) as r:
        event = None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "end":
                status = json.loads(line[5:])["status"]
                break
            elif not line:
                event = None
    return status


def berth_build(server, body, patch_of=None):
    started = time.monotonic()
    if patch_of:
        st, t = server.call("PATCH", f"/v1/templates/{patch_of}", {"build": body})
    else:
        st, t = server.call("POST", "/v1/templates", {"name": "bench-" + rand(6), "build": body})
    if st not in (200, 201):
        raise SystemExit(f"template build refused ({st}): {t}")
    status = follow_build(server, t["id"], t["version"])
    took = time.monotonic() - started
    if status != "ready":
        raise SystemExit(f"berth build ended {status}: see /v1/templates/{t['id']}/builds/{t['version']}/logs")
    return t["id"], took


def docker_build(text, tag):
    """Seconds `docker build` (classic builder, as berth uses) takes for the same
    Dockerfile and context, trusting the host's CA bundle the way berth's builds do."""
    lines = text.splitlines()
    text = "\n".join([lines[0], "COPY ca.crt /ca.crt", "ENV SSL_CERT_FILE=/ca.crt", *lines[1:]]) + "\n"
    with tempfile.TemporaryDirectory() as d:
        for name, data in (("Dockerfile", text), ("install.py", INSTALL)):
            with open(os.path.join(d, name), "w") as f:
                f.write(data)
        subprocess.run(["cp", "/etc/ssl/certs/ca-certificates.crt", os.path.join(d, "ca.crt")], check=True)
        started = time.monotonic()
        r = subprocess.run(["docker", "build", "-q", "-t", tag, d], capture_output=True, text=True,
                           env=dict(os.environ, DOCKER_BUILDKIT="0"))
        took = time.monotonic() - started
    if r.returncode != 0:
        raise SystemExit(f"docker build failed: {r.stderr}")
    return took


def create(server, template):
    started = time.monotonic()
    st, inst = server.call("POST", "/v1/instances", {"template": template})
    took = (time.monotonic() - started) * 1000
    if st != 201:
        raise SystemExit(f"create from {template} failed ({st}): {inst}")
    return inst["id"], took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="berth/base:bookworm")
    ap.add_argument("--creates", type=int, default=20)
    ap.add_argument("--build", choices=["release", "debug"])
    args = ap.parse_args()
    server = Server(args.base, [], args.build)
    tags = []
    try:
        server.wait_ready()
        ctx = context_b64()
        nonce = rand(12)
        body = {"dockerfile": dockerfile(args.base, nonce), "context": ctx}
        built, berth_cold = berth_build(server, body)
        _, berth_cached = berth_build(server, body, patch_of=built)
        tag = "berth-bench/docker-build:" + rand(6)
        tags.append(tag)
        other = dockerfile(args.base, rand(12))
        docker_cold = docker_build(other, tag)
        docker_cached = docker_build(other, tag)
        print(f"berth {server.profile} build; Dockerfile: FROM {args.base}, COPY, RUN python3 install.py (six from PyPI)")
        print(f"{'build':<34}{'cold s':>8}{'cached s':>10}")
        print(f"{'berth (API, log followed)':<34}{berth_cold:>8.1f}{berth_cached:>10.1f}")
        print(f"{'docker build (CLI, classic)':<34}{docker_cold:>8.1f}{docker_cached:>10.1f}")

        st, t = server.call("POST", "/v1/templates", {"name": "bench-image", "image": args.base})
        if st != 201:
            raise SystemExit(f"template create failed ({st}): {t}")
        kinds = [("system template (berth-agent)", "berth-agent"), ("custom template, same image", t["id"]),
                 ("built template", built)]
        times = {k: [] for _, k in kinds}
        made = []
        for _, k in kinds:  # one warm-up create each, not counted
            made.append(create(server, k)[0])
        for i in range(args.creates):
            order = kinds if i % 2 == 0 else list(reversed(kinds))
            for _, k in order:
                iid, took = create(server, k)
                times[k].append(took)
                # Gone before the next (not timed): the host's memory admits ~20 size-1 instances.
                server.call("DELETE", f"/v1/instances/{iid}?purge=true")
        print(f"\n{args.creates} creates each, alternating, size 1, base {args.base}")
        print(f"{'template':<34}{'create p50 ms':>14}{'p90 ms':>10}")
        for label, k in kinds:
            print(f"{label:<34}{pct(times[k], 50):>14.0f}{pct(times[k], 90):>10.0f}")
        system = pct(times["berth-agent"], 50)
        print(f"ratio custom/system p50: {pct(times[t['id']], 50) / system:.2f}, "
              f"built/system: {pct(times[built], 50) / system:.2f}")
        for iid in made:
            server.call("DELETE", f"/v1/instances/{iid}?purge=true")
    finally:
        server.stop()
        for tag in tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


if __name__ == "__main__":
    main()
