#!/usr/bin/env python3
"""The helper of scripts/bench-peers.sh (stdlib only): seeds OpenBao, writes the objects of one
system, starts its controller, watches until every object is Ready, and measures the process.

    bench-peers.py seed --bao ADDR --token T --n N
    bench-peers.py run --system NAME --kind secretsync|eso --n N --admin KUBECONFIG \
        --bao ADDR --token T --audit-log FILE --out RESULTS.jsonl --log FILE -- CONTROLLER ARGV...
    bench-peers.py table RESULTS.jsonl

`run` creates 10 namespaces `<system>-<j>`, each with the OpenBao token Secret and a Vault store
`vault` (KV v2 at `secret/`, token auth), then N objects (ExternalSecrets `es-<i>` or
SecretSyncs `ss-<i>`, label bench=peers, `refreshInterval: 1h`), each reading its own key
`bench/k<i>` (property `password`), all before the controller starts. The clock runs from the
controller's spawn until the watch has seen every object with `Ready=True`; then the process's
peak RSS (VmHWM) and CPU seconds (utime + stime) are read from /proc, a sample of target
Secrets is checked against OpenBao's values, the controller's API requests are counted from
kube-apiserver's audit log (its own user, until it has been quiet for 2 s), the namespaces are
deleted (the controller still running, so that finalizers are honoured) and it is stopped.
"""

import argparse
import base64
import datetime
import glob
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

NAMESPACES = 10
WRITERS = 16
LABEL = "bench=peers"


def die(msg):
    print(f"bench-peers: {msg}", file=sys.stderr)
    sys.exit(1)


class Kube:
    """A client of the API server with the admin kubeconfig's client certificate; one
    keep-alive connection per thread."""

    def __init__(self, kubeconfig):
        text = open(kubeconfig).read()

        def field(name):
            m = re.search(rf"^\s*{name}:\s*(\S+)\s*$", text, re.M)
            if not m:
                die(f"{kubeconfig}: no {name}")
            return m.group(1)

        url = urllib.parse.urlsplit(field("server"))
        self.host, self.port = url.hostname, url.port
        self.ctx = ssl.create_default_context(cafile=field("certificate-authority"))
        self.ctx.load_cert_chain(field("client-certificate"), field("client-key"))
        self.local = threading.local()

    def connect(self, timeout=60):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, ok=(200, 201)):
        last = None
        for _ in range(8):
            conn = getattr(self.local, "conn", None) or self.connect()
            self.local.conn = conn
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                self.local.conn = None
                last = e
                time.sleep(0.2)
                continue
            if resp.status == 429 or resp.status >= 500:
                last = f"{resp.status} {data[:200]!r}"
                time.sleep(0.5)
                continue
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
            return json.loads(data) if data else None
        raise RuntimeError(f"{method} {path}: {last}")

    def create(self, path, obj):
        # 409: a retry of a create whose answer was lost.
        return self.request("POST", path, obj, ok=(200, 201, 202, 409))


def bao_request(addr, token, method, path, body=None):
    url = urllib.parse.urlsplit(addr)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"X-Vault-Token": token, "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status not in (200, 204):
        raise RuntimeError(f"OpenBao {method} {path}: {resp.status} {data[:300]!r}")
    return json.loads(data) if data else None


def value_of(i):
    return f"p-{i}"


def seed(args):
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda i: bao_request(args.bao, args.token, "POST", f"/v1/secret/data/bench/k{i}",
                                            {"data": {"password": value_of(i)}}), range(args.n)))
    print(f"bench-peers: {args.n} keys bench/k<i> written to OpenBao", file=sys.stderr)


# --- the two systems' objects -----------------------------------------------------------

class System:
    def __init__(self, kind):
        self.kind = kind
        if kind == "eso":
            self.group, self.plural, self.store_plural = "external-secrets.io/v1", "externalsecrets", "secretstores"
        else:
            self.group, self.plural, self.store_plural = "secretsync.io/v1alpha1", "secretsyncs", "secretstores"

    def base(self, ns=None):
        return f"/apis/{self.group}" + (f"/namespaces/{ns}" if ns else "")

    def store(self, bao):
        spec = {"provider": {"vault": {"server": bao, "path": "secret", "version": "v2",
                                       "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}}
        return {"apiVersion": self.group, "kind": "SecretStore", "metadata": {"name": "vault"}, "spec": spec}

    def name(self, i):
        return f"es-{i}" if self.kind == "eso" else f"ss-{i}"

    def object(self, i):
        data = [{"secretKey": "password", "remoteRef": {"key": f"bench/k{i}", "property": "password"}}]
        meta = {"name": self.name(i), "labels": {"bench": "peers"}}
        if self.kind == "eso":
            spec = {"refreshInterval": "1h", "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                    "target": {"name": self.name(i)}, "data": data}
            return {"apiVersion": self.group, "kind": "ExternalSecret", "metadata": meta, "spec": spec}
        # As crates/operator/benches/compare.rs writes them, with the same refresh interval.
        spec = {"storeRef": {"name": "vault"}, "data": data, "history": {"limit": 3}, "refreshInterval": "1h"}
        return {"apiVersion": self.group, "kind": "SecretSync", "metadata": meta, "spec": spec}

    def target_secret(self, obj):
        if self.kind == "eso":
            return obj["metadata"]["name"]
        versions = (obj.get("status") or {}).get("versions") or []
        active = [v for v in versions if v.get("state") == "Active"] or versions
        return active[-1]["secretName"] if active else None


def is_ready(obj):
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


class Watcher(threading.Thread):
    """Lists and watches the system's objects (all namespaces, label bench=peers) and notes
    when every one of the N is Ready at once."""

    def __init__(self, kube, system, n):
        super().__init__(daemon=True)
        self.kube, self.system, self.n = kube, system, n
        self.ready = set()
        self.all_ready_at = None
        self.done = threading.Event()
        self.error = None

    def note(self, obj, deleted=False):
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if not deleted and is_ready(obj):
            self.ready.add(key)
        else:
            self.ready.discard(key)
        if self.all_ready_at is None and len(self.ready) >= self.n:
            self.all_ready_at = time.monotonic()
            self.done.set()

    def run(self):
        sel = urllib.parse.quote(LABEL)
        path = f"{self.system.base()}/{self.system.plural}"
        try:
            while not self.done.is_set():
                listed = self.kube.request("GET", f"{path}?labelSelector={sel}")
                self.ready.clear()
                for obj in listed["items"]:
                    self.note(obj)
                rv = listed["metadata"]["resourceVersion"]
                conn = self.kube.connect(timeout=120)
                conn.request("GET", f"{path}?labelSelector={sel}&watch=1&allowWatchBookmarks=true"
                                    f"&resourceVersion={rv}&timeoutSeconds=60")
                resp = conn.getresponse()
                if resp.status != 200:
                    raise RuntimeError(f"watch {path}: {resp.status} {resp.read()[:200]!r}")
                while not self.done.is_set():
                    line = resp.readline()
                    if not line:
                        break
                    event = json.loads(line)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.note(event["object"], deleted=event["type"] == "DELETED")
                    elif event["type"] == "ERROR":
                        break  # expired resourceVersion: list again
                conn.close()
        except Exception as e:  # noqa: BLE001 — reported by the caller
            self.error = e
            self.done.set()


# --- /proc ------------------------------------------------------------------------------

def proc_figures(pid):
    """VmHWM, RssAnon and RssFile (bytes) and CPU seconds of a process."""
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                status[key] = int(value.split()[0]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return status, cpu


def audited_reads(path):
    """Responses OpenBao's audit log has for reads of the bench keys."""
    if not path or not os.path.exists(path):
        return 0
    needle = '"path":"secret/data/bench/'
    with open(path) as f:
        return sum(1 for line in f if '"type":"response"' in line and needle in line)


WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def api_events(path, user):
    """kube-apiserver's audit events (JSON lines, stage ResponseComplete) of one user, from PATH
    and the files it was rotated into (audit-<time>.log beside it: kube-apiserver rotates its
    audit log at 100 MB by default)."""
    if not path:
        return []
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    files = sorted(glob.glob(os.path.join(folder, f"{stem}-*{ext}")) + [path])
    needle = f'"username":"{user}"'
    events = []
    for file in files:
        if not os.path.exists(file):
            continue
        with open(file) as f:
            for line in f:
                if needle in line:
                    event = json.loads(line)
                    if event.get("stage") == "ResponseComplete":
                        events.append(event)
    return events


def wait_api_idle(path, quiet=2.0, cap=30.0):
    """Waits until the audit log has not grown for QUIET seconds (at most CAP): it records only
    the controllers' users, and one controller runs at a time. Returns the wall-clock time then."""
    start = since = time.monotonic()
    last = -1
    while time.monotonic() - start < cap:
        count = os.path.getsize(path) if os.path.exists(path) else 0
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.5)
    return time.time()


def api_counts(path, user, until):
    """USER's requests received until UNTIL (wall clock), by verb and resource."""
    by = {}
    for event in api_events(path, user):
        received = event["requestReceivedTimestamp"].replace("Z", "+00:00")
        if datetime.datetime.fromisoformat(received).timestamp() > until:
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", event.get("requestURI", "?"))
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        key = f"{event['verb']} {resource}"
        by[key] = by.get(key, 0) + 1
    return dict(sorted(by.items(), key=lambda kv: -kv[1]))


def stop(proc, grace=30):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(args):
    kube = Kube(args.admin)
    system = System(args.kind)
    namespaces = [f"{args.system}-{j}" for j in range(NAMESPACES)]
    start = time.monotonic()
    for ns in namespaces:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kube.create(f"/api/v1/namespaces/{ns}/secrets",
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-token"},
                     "stringData": {"token": args.token}})
        kube.create(f"{system.base(ns)}/{system.store_plural}", system.store(args.bao))

    def create(i):
        ns = namespaces[i % NAMESPACES]
        kube.create(f"{system.base(ns)}/{system.plural}", system.object(i))

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(create, range(args.n)))
    print(f"bench-peers: {args.system}: {NAMESPACES} namespaces, {args.n} {system.plural} written in "
          f"{time.monotonic() - start:.1f} s", file=sys.stderr)

    reads_before = audited_reads(args.audit_log)
    watcher = Watcher(kube, system, args.n)
    log = open(args.log, "w")
    env = dict(os.environ, KUBECONFIG=args.kubeconfig)
    for var in ("POD_NAME", "POD_NAMESPACE", "RUST_LOG"):
        env.pop(var, None)
    t0 = time.monotonic()
    proc = subprocess.Popen(args.argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    watcher.start()
    timeout = args.timeout or max(300, args.n)
    result = {"system": args.system, "label": args.label or args.system, "kind": args.kind, "n": args.n,
              "argv": args.argv[1:]}
    try:
        while not watcher.done.wait(0.5):
            if proc.poll() is not None:
                die(f"{args.system}: the controller exited ({proc.returncode}); log: {args.log}")
            if time.monotonic() - t0 > timeout:
                die(f"{args.system}: {len(watcher.ready)} of {args.n} Ready after {timeout} s; log: {args.log}")
        if watcher.error:
            die(f"{args.system}: watch failed: {watcher.error}")
        seconds = watcher.all_ready_at - t0
        mem, cpu = proc_figures(proc.pid)
        mib = {key: round(value / 2**20, 1) for key, value in mem.items()}
        result.update(seconds=round(seconds, 2), syncs_per_s=round(args.n / seconds, 1),
                      vmhwm_mib=mib["VmHWM"], rss_anon_mib=mib["RssAnon"], rss_file_mib=mib["RssFile"],
                      cpu_s=round(cpu, 2))
        print(f"bench-peers: {args.system}: all {args.n} Ready {seconds:.1f} s after start", file=sys.stderr)

        # Each system synced every object: a sample of targets holds OpenBao's values.
        sample = sorted(set(range(0, args.n, max(1, args.n // 20))) | {args.n - 1})
        for i in sample:
            ns = namespaces[i % NAMESPACES]
            obj = kube.request("GET", f"{system.base(ns)}/{system.plural}/{system.name(i)}")
            name = system.target_secret(obj)
            if not name:
                die(f"{args.system}: {ns}/{system.name(i)} is Ready but names no Secret")
            secret = kube.request("GET", f"/api/v1/namespaces/{ns}/secrets/{name}")
            got = base64.b64decode((secret.get("data") or {}).get("password", "")).decode()
            if got != value_of(i):
                die(f"{args.system}: Secret {ns}/{name} holds {got!r}, OpenBao {value_of(i)!r}")
        result["checked_secrets"] = len(sample)
        # Reads of the bench keys until now (including the checks' none: they read Secrets).
        result["backend_reads"] = audited_reads(args.audit_log) - reads_before
        # API requests: until the controller has been quiet for 2 s (events and the like
        # may follow Ready), before the namespaces go.
        api_until = wait_api_idle(args.api_audit_log) if args.api_audit_log else None
    finally:
        # Namespaces go while the controller runs (it may hold finalizers), then it stops.
        for ns in namespaces:
            try:
                kube.request("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202, 404))
            except RuntimeError as e:
                print(f"bench-peers: delete namespace {ns}: {e}", file=sys.stderr)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            left = [ns for ns in namespaces
                    if kube.request("GET", f"/api/v1/namespaces/{ns}", ok=(200, 404)).get("kind") == "Namespace"]
            if not left:
                break
            time.sleep(1)
        else:
            print(f"bench-peers: {args.system}: namespaces still terminating after 300 s", file=sys.stderr)
        stop(proc)
        log.close()
    if args.api_audit_log:
        time.sleep(1)  # the watches' ResponseComplete, written as they end
        by = api_counts(args.api_audit_log, args.user, api_until)
        writes = sum(n for key, n in by.items() if key.split()[0] in WRITE_VERBS)
        result.update(api_until=round(api_until, 3), api_requests=sum(by.values()), api_writes=writes,
                      writes_per_object=round(writes / args.n, 2), api_by=by)
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")


# --- the table ----------------------------------------------------------------------------

def table(args):
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    if not rows:
        die(f"{args.results}: no results")
    for n in sorted({r["n"] for r in rows}):
        runs = [r for r in rows if r["n"] == n]
        print(f"\nN = {n}\n")
        print("| measure | " + " | ".join(r["label"] for r in runs) + " |")
        print("|---|" + "---:|" * len(runs))
        measures = [
            ("time from controller start to all Ready (s)", "seconds"),
            ("syncs/s", "syncs_per_s"),
            ("peak RSS, VmHWM (MiB)", "vmhwm_mib"),
            ("RSS when all Ready: anonymous / file-backed (MiB)", "rss"),
            ("CPU seconds (utime + stime)", "cpu_s"),
            ("OpenBao reads of the N keys (audit log)", "backend_reads"),
            ("API requests until idle (kube-apiserver audit log)", "api_requests"),
            ("API writes (create, update, patch, delete)", "api_writes"),
            ("API writes per synced object", "writes_per_object"),
        ]
        for r in runs:
            r["rss"] = f"{r.get('rss_anon_mib', '—')} / {r.get('rss_file_mib', '—')}"
        for title, key in measures:
            print(f"| {title} | " + " | ".join(str(r.get(key, "—")) for r in runs) + " |")
        print("| controller arguments | " + " | ".join("`" + " ".join(r["argv"]) + "`" for r in runs) + " |")
        if any("api_by" in r for r in runs):
            print("\nAPI requests by verb and resource (each controller's own user):\n")
            for r in runs:
                by = ", ".join(f"{key} {n}" for key, n in r.get("api_by", {}).items())
                print(f"- {r['label']}: {by or '—'}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--bao", required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--n", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--system", required=True)
    r.add_argument("--label", help="the system's column in the table (default: --system)")
    r.add_argument("--kind", choices=["secretsync", "eso"], required=True)
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--admin", required=True, help="the admin kubeconfig (client certificate)")
    r.add_argument("--kubeconfig", required=True, help="the controller's own user")
    r.add_argument("--bao", required=True)
    r.add_argument("--token", required=True)
    r.add_argument("--audit-log", help="OpenBao's file audit log")
    r.add_argument("--api-audit-log", help="kube-apiserver's audit log (JSON lines)")
    r.add_argument("--user", help="the controller's user name in the API audit log")
    r.add_argument("--out", required=True)
    r.add_argument("--log", required=True)
    r.add_argument("--timeout", type=int, default=0)
    r.add_argument("argv", nargs="+")
    t = sub.add_parser("table")
    t.add_argument("results")
    args = p.parse_args()
    {"seed": seed, "run": run, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
