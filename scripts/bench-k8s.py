#!/usr/bin/env python3
"""The Kubernetes runtime (issue 15), in one run on a real cluster:

  1. create -> running p50/p95: `POST /v1/instances` (201 once the pod runs and its agent
     answers /health), interleaved with a bare `kubectl apply` of the same Pod and
     PersistentVolumeClaim (the objects berth made for the first instance, renamed)
     followed by `kubectl wait --for=condition=Ready` (no probe: Ready = its containers
     started, a weaker condition than berth's agent answering);
  2. exec round trip of `true` p50/p95: `POST /v1/instances/{id}/exec` beside
     `kubectl exec POD -c main -- true` on the same pod, interleaved (kubectl's figure
     includes starting the kubectl process: `kubectl version --client` is printed too);
  3. the server's RSS idle, then with --instances (100) instances running, and the time
     those creates took (--clients at once).

    scripts/bench-k8s.py --kubeconfig PATH [--kubectl PATH] [--agent-image IMAGE]
                         [--image IMAGE] [--creates 10] [--execs 30] [--instances 100]

A cluster: scripts/k8s-testbed.sh up DIR (prints the kubeconfig; kubectl is DIR/kubectl).
The agent image: scripts/build-agent-image.sh (default: built from the static agent).
Everything runs in a namespace of its own, deleted at the end. Uses target/release/berth
(else target/debug/berth) and the matching static agent.
"""
import argparse, json, os, subprocess, sys, threading, time

from benchlib import ROOT, Server, binaries, log, pct, rand, vm_rss

MIB = 1024 * 1024


def summary(xs):
    return {"p50": round(pct(xs, 50), 1), "p95": round(pct(xs, 95), 1), "n": len(xs)}


class Kube:
    def __init__(self, kubectl, kubeconfig, namespace):
        self.kubectl, self.kubeconfig, self.namespace = kubectl, kubeconfig, namespace

    def argv(self, *args):
        return [self.kubectl, "--kubeconfig", self.kubeconfig, "-n", self.namespace, *args]

    def run(self, *args, stdin=None, check=True, timeout=300):
        r = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def json(self, *args):
        return json.loads(self.run(*args, "-o", "json"))


def bare_objects(kube, instance_id, name):
    """The Pod and claim berth made for `instance_id`, renamed to `name` (the Pod keeps
    reading the instance's env Secret, which stays while the run lasts)."""
    pod = kube.json("get", "pods", "-l", f"berth.instance={instance_id}")["items"][0]
    pvc = kube.json("get", "pvc", "-l", f"berth.instance={instance_id}")["items"][0]
    labels = {"bench": "bare"}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "labels": labels},
           "spec": {k: v for k, v in pvc["spec"].items() if k in ("accessModes", "resources", "storageClassName")}}
    spec = pod["spec"]
    for key in ("nodeName", "tolerations"):
        spec.pop(key, None)
    for vol in spec.get("volumes", []):
        if "persistentVolumeClaim" in vol:
            vol["persistentVolumeClaim"]["claimName"] = name
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [pvc, pod]})


def timed(f):
    t = time.monotonic()
    out = f()
    return (time.monotonic() - t) * 1000, out


def phase_create(args, srv, kube, keeper_id):
    berth, bare = [], []
    for i in range(args.creates):
        ms, (st, inst) = timed(lambda: srv.call("POST", "/v1/instances", {"name": f"c{i}"}))
        if st != 201:
            raise RuntimeError(f"create answered {st}: {inst}")
        berth.append(ms)
        srv.call("DELETE", f"/v1/instances/{inst['id']}?purge=true")
        name = f"bare-{i}-{rand(4)}"
        objects = bare_objects(kube, keeper_id, name)

        def apply_and_wait():
            kube.run("apply", "-f", "-", stdin=objects)
            kube.run("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=180s")
        ms, _ = timed(apply_and_wait)
        bare.append(ms)
        kube.run("delete", "pod,pvc", name, "--wait=false", check=False)
        log(f"create {i + 1}/{args.creates}: berth {berth[-1]:.0f} ms, kubectl apply+wait {bare[-1]:.0f} ms")
    return {"berth_ms": berth, "kubectl_ms": bare}


def phase_exec(args, srv, kube, keeper_id):
    pod = kube.run("get", "pods", "-l", f"berth.instance={keeper_id}", "-o", "jsonpath={.items[0].metadata.name}")
    berth, kubectl, client = [], [], []
    for _ in range(args.execs):
        ms, (st, out) = timed(lambda: srv.call("POST", f"/v1/instances/{keeper_id}/exec", {"command": ["true"]}))
        if st != 200 or out.get("exit_code") != 0:
            raise RuntimeError(f"exec answered {st}: {out}")
        berth.append(ms)
        ms, _ = timed(lambda: kube.run("exec", pod, "-c", "main", "--", "true"))
        kubectl.append(ms)
        ms, _ = timed(lambda: kube.run("version", "--client"))
        client.append(ms)
    return {"berth_ms": berth, "kubectl_exec_ms": kubectl, "kubectl_client_only_ms": client}


def phase_rss(args, srv):
    idle = vm_rss(srv.proc.pid)
    made, errors, lock = [], [], threading.Lock()
    todo = list(range(args.instances))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            st, body = srv.call("POST", "/v1/instances", {"name": f"r{i}"}, timeout=600)
            with lock:
                (made if st == 201 else errors).append(body if st != 201 else body["id"])
                if st != 201 and len(errors) == 1:
                    log(f"a create answered {st}: {body}")
                if (len(made) + len(errors)) % 10 == 0:
                    log(f"{len(made)} created, {len(errors)} failed")
    t = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.monotonic() - t
    if errors:
        log(f"{len(errors)} creates failed, the first: {errors[0]}")
    time.sleep(args.settle)
    return {"idle_rss_mib": round(idle / MIB, 1), "instances": len(made), "failed": len(errors),
            "creates_secs": round(took, 1), "rss_mib": round(vm_rss(srv.proc.pid) / MIB, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--agent-image", help="default: scripts/build-agent-image.sh --agent <the static agent>")
    ap.add_argument("--image", default="berth-test/busybox:latest", help="the instances' base image (local)")
    ap.add_argument("--build", choices=["release", "debug"])
    ap.add_argument("--creates", type=int, default=10)
    ap.add_argument("--execs", type=int, default=30)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--settle", type=int, default=15, help="seconds between the last create and the RSS reading")
    args = ap.parse_args()
    bins = binaries(args.build)
    agent_image = args.agent_image or subprocess.run(
        [os.path.join(ROOT, "scripts/build-agent-image.sh"), "--agent", bins[2]],
        check=True, capture_output=True, text=True).stdout.strip()
    namespace = "berth-bench-" + rand(6)
    kube = Kube(args.kubectl, args.kubeconfig, namespace)
    subprocess.run([args.kubectl, "--kubeconfig", args.kubeconfig, "create", "namespace", namespace],
                   check=True, capture_output=True)
    # A 2-core test node holds 100 instances only when each reserves little of its size
    # (requests are a percent of the limits); the limits are the size's, as always.
    flags = ["--runtime", "kubernetes", "--kubeconfig", args.kubeconfig, "--namespace", namespace,
             "--k8s-agent-image", agent_image, "--k8s-cpu-request-percent", "1",
             "--k8s-memory-request-percent", "2", "--key-rate", "0", "--instance-limit", "100000",
             "--memory-overcommit", "1000"]
    srv = Server(args.image, flags, bins=bins, log=True)
    res = {"machine": {"build": bins[0], "agent_image": agent_image, "image": args.image}}
    try:
        srv.wait_ready(30)
        st, keeper = srv.call("POST", "/v1/instances", {"name": "keeper"})
        if st != 201:
            sys.exit(f"the first create answered {st}: {keeper}\n{srv.log_tail()}")
        log("create phase")
        res["create"] = phase_create(args, srv, kube, keeper["id"])
        log("exec phase")
        res["exec"] = phase_exec(args, srv, kube, keeper["id"])
        log(f"RSS phase: {args.instances} instances")
        res["rss"] = phase_rss(args, srv)
    finally:
        srv.halt()
        subprocess.run([args.kubectl, "--kubeconfig", args.kubeconfig, "delete", "namespace", namespace,
                        "--wait=false"], capture_output=True)
        import shutil
        shutil.rmtree(srv.data, ignore_errors=True)
    c, e, r = res["create"], res["exec"], res["rss"]
    print()
    print(f"{'figure':46} {'berth':>10} {'kubectl':>10}")
    for label, a, b, p in [("create -> running p50 (ms)", c["berth_ms"], c["kubectl_ms"], 50),
                           ("create -> running p95 (ms)", c["berth_ms"], c["kubectl_ms"], 95),
                           ("exec round trip of `true` p50 (ms)", e["berth_ms"], e["kubectl_exec_ms"], 50),
                           ("exec round trip of `true` p95 (ms)", e["berth_ms"], e["kubectl_exec_ms"], 95)]:
        print(f"{label:46} {pct(a, p):>10.1f} {pct(b, p):>10.1f}")
    print(f"{'kubectl version --client alone p50 (ms)':46} {'':>10} {pct(e['kubectl_client_only_ms'], 50):>10.1f}")
    print(f"{'server RSS idle (MiB)':46} {r['idle_rss_mib']:>10}")
    print(f"{'server RSS with %d instances (MiB)' % r['instances']:46} {r['rss_mib']:>10}")
    print(f"{'%d creates, %d clients (s)' % (r['instances'] + r['failed'], args.clients):46} {r['creates_secs']:>10}")
    res["summary"] = {"create": {"berth": summary(c["berth_ms"]), "kubectl": summary(c["kubectl_ms"])},
                      "exec": {"berth": summary(e["berth_ms"]), "kubectl": summary(e["kubectl_exec_ms"])}}
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(ROOT, "bench/results", time.strftime("k8s-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n(results: {os.path.relpath(path, ROOT)})")


if __name__ == "__main__":
    main()
