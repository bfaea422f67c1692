"""Self-check of the GCE contract server (gce.py); run by hand, not part of the Rust tests.

    python3 deploy/contracts/selfcheck_gce.py [PATH/TO/compute.v1.json]

(default: the one deploy/test-servers.sh installs under $SKYX_TOOLS_DIR/contracts).

Starts gce.py on a free port, drives it with urllib through the lifecycle a provider uses, and
checks every 2xx answer against the method's documented response schema (discovery.py
conforms). Prints one line per check; exits 1 on the first mismatch.
"""
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from discovery import Discovery  # noqa: E402

DISC = PORT = None
P, Z = "p1", "us-east1-b"
BODY = {"name": "skyx-j1-a0", "machineType": f"zones/{Z}/machineTypes/e2-standard-2",
        "disks": [{"boot": True, "autoDelete": True, "initializeParams": {
            "sourceImage": "projects/debian-cloud/global/images/family/debian-12",
            "diskSizeGb": "10"}}],
        "networkInterfaces": [{"network": "global/networks/default", "accessConfigs": [
            {"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]}],
        "metadata": {"items": [{"key": "startup-script", "value": "#!/bin/sh\necho hi\n"}]},
        "serviceAccounts": [{"email": f"agent@{P}.iam.gserviceaccount.com",
                             "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
        "tags": {"items": ["skyx-j1"]}, "labels": {"skyx-job": "j1"},
        "scheduling": {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE",
                       "onHostMaintenance": "TERMINATE", "automaticRestart": False,
                       "maxRunDuration": {"seconds": "21600"}}}


def call(verb, path, body=None, status=200, ref=None, auth=True):
    base = f"http://127.0.0.1:{PORT}"
    url = base + (path if path.startswith("/_") else "/compute/v1/projects/" + path)
    req = urllib.request.Request(url, method=verb, data=None if body is None else
                                 json.dumps(body).encode(), headers={"Content-Type":
                                                                     "application/json"})
    if auth:
        req.add_header("Authorization", "Bearer test-token")
    try:
        with urllib.request.urlopen(req) as r:
            got, out = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        got, out = e.code, json.loads(e.read())
    if got != status:
        fail(f"{verb} {path}: status {got}, want {status}: {json.dumps(out)[:400]}")
    if got >= 400 and not path.startswith("/_"):
        err = out["error"]
        assert err["code"] == got and err["errors"][0]["domain"] == "global", out
    if ref and got < 300:
        problems = DISC.conforms(ref, out)
        if problems:
            fail(f"{verb} {path}: answer is not a well-formed {ref}: {problems[:5]}")
    return out


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)
    print("ok  ", what)


def main():
    global DISC, PORT
    tools = os.environ.get("SKYX_TOOLS_DIR", os.path.expanduser("~/.cache/skyx-tools"))
    docs = sys.argv[1:] or glob.glob(f"{tools}/contracts/lib/python3*/site-packages/"
                                     "googleapiclient/discovery_cache/documents/compute.v1.json")
    if not docs:
        sys.exit("no compute.v1.json: give its path or run deploy/test-servers.sh install")
    DISC = Discovery(docs[0])
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    PORT = s.getsockname()[1]
    s.close()
    srv = subprocess.Popen([sys.executable, os.path.join(HERE, "gce.py"), "--port", str(PORT),
                            "--discovery", docs[0]], stderr=open(os.devnull, "w"))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT)).close()
                break
            except OSError:
                time.sleep(0.1)
        run()
    finally:
        srv.terminate()
    print("selfcheck passed")


def run():
    ins = f"{P}/zones/{Z}/instances"
    e = call("POST", ins, BODY, 401, auth=False)
    check(e["error"]["errors"][0]["reason"] == "required", "insert without auth -> 401 required")
    e = call("POST", ins, dict(BODY, foo=1), 400)
    check('Unknown name "foo"' in e["error"]["message"], "unknown field -> 400 Unknown name")
    call("POST", ins, {k: v for k, v in BODY.items() if k != "name"}, 400)
    check(True, "missing name -> 400")
    e = call("POST", ins, dict(BODY, name="Bad_Name"), 400)
    check("regex" in e["error"]["message"], "bad name -> 400 (pattern from the document)")
    call("POST", ins, dict(BODY, machineType=f"zones/{Z}/machineTypes/e2-huge-3"), 400)
    call("POST", ins, dict(BODY, disks=[{"boot": True, "initializeParams": {
        "sourceImage": "projects/debian-cloud/global/images/family/nope"}}]), 404)
    check(True, "unknown machine type -> 400, unknown image family -> 404")
    rid = "6f1c2b4e-8d1a-4c55-9a51-3f0e6a7b9c11"
    op = call("POST", ins + "?requestId=" + rid, BODY, ref="Operation")
    check(op["status"] == "PENDING" and op["operationType"] == "insert" and
          op["targetLink"].endswith(f"/projects/{P}/zones/{Z}/instances/skyx-j1-a0") and
          op["zone"] == f"https://www.googleapis.com/compute/v1/projects/{P}/zones/{Z}",
          "valid insert -> PENDING insert Operation")
    again = call("POST", ins + "?requestId=" + rid, BODY, ref="Operation")
    check(again["name"] == op["name"], "same requestId -> same Operation")
    call("POST", ins, BODY, 409)
    check(True, "same name again -> 409")
    opp = f"{P}/zones/{Z}/operations/{op['name']}"
    call("GET", ins + "/skyx-j1-a0", status=404)
    check(call("GET", opp, ref="Operation")["status"] == "RUNNING", "op get -> RUNNING")
    check(call("POST", opp + "/wait", ref="Operation")["status"] == "DONE", "op wait -> DONE")
    seen = [call("GET", ins + "/skyx-j1-a0", ref="Instance") for _ in range(3)]
    check([i["status"] for i in seen] == ["PROVISIONING", "STAGING", "RUNNING"],
          "instance get -> PROVISIONING, STAGING, RUNNING")
    nic = seen[2]["networkInterfaces"][0]
    nat = nic["accessConfigs"][0].get("natIP", "")
    check(nat.startswith("198.51.100.") and nic["networkIP"].startswith("10.128."),
          f"RUNNING has natIP {nat}, networkIP {nic['networkIP']}")
    agg = call("GET", f'{P}/aggregated/instances?filter=labels.skyx-job%20%3D%20%22j1%22',
               ref="InstanceAggregatedList")
    check([i["name"] for i in agg["items"][f"zones/{Z}"]["instances"]] == ["skyx-j1-a0"],
          'aggregatedList filter labels.skyx-job = "j1" finds it')
    agg = call("GET", f"{P}/aggregated/instances?filter=labels.skyx-job%3Dj2",
               ref="InstanceAggregatedList")
    check(all("warning" in v for v in agg["items"].values()), "filter labels.skyx-job=j2: none")
    lst = call("GET", ins + "?filter=name%20eq%20skyx-.*", ref="InstanceList")
    check(len(lst["items"]) == 1, "list filter name eq skyx-.* finds it")
    call("GET", ins + "?filter=cpuPlatform%20%3E%203", status=400)
    e = call("POST", ins + "/skyx-j1-a0/setLabels", {"labels": {"a": "b"},
                                                      "labelFingerprint": "AAAAAAAAAAA="}, 412)
    check(e["error"]["errors"][0]["reason"] == "conditionNotMet", "setLabels stale fp -> 412")

    # Faults: capacity in one zone, quota in the region; no instance appears.
    call("POST", "/_contract/faults", {"project": P, "zone": "us-east1-c",
                                       "code": "ZONE_RESOURCE_POOL_EXHAUSTED"})
    body = dict(BODY, name="skyx-j1-a1", machineType="zones/us-east1-c/machineTypes/e2-standard-2")
    op = call("POST", f"{P}/zones/us-east1-c/instances", body, ref="Operation")
    done = call("POST", f"{P}/zones/us-east1-c/operations/{op['name']}/wait", ref="Operation")
    err = done["error"]["errors"][0]
    check(done["status"] == "DONE" and err["code"] == "ZONE_RESOURCE_POOL_EXHAUSTED" and
          done["httpErrorStatusCode"] == 503 and "resource-error" in
          err["errorDetails"][0]["help"]["links"][0]["url"], "zone fault -> op DONE with error")
    call("GET", f"{P}/zones/us-east1-c/instances/skyx-j1-a1", status=404)
    call("POST", "/_contract/faults", {"project": P, "region": "us-east1", "count": 1,
                                       "code": "QUOTA_EXCEEDED"})
    call("DELETE", "/_contract/faults?project=p1")
    call("POST", "/_contract/faults", {"project": P, "region": "us-east1", "count": 1,
                                       "code": "QUOTA_EXCEEDED"})
    body = dict(body, name="skyx-j1-a2", machineType=f"zones/{Z}/machineTypes/e2-standard-2")
    op = call("POST", ins, body, ref="Operation")
    done = call("POST", f"{P}/zones/{Z}/operations/{op['name']}/wait", ref="Operation")
    q = done["error"]["errors"][0]
    check(q["code"] == "QUOTA_EXCEEDED" and done["httpErrorStatusCode"] == 403 and
          q["errorDetails"][0]["quotaInfo"]["dimensions"] == {"region": "us-east1"},
          "region quota fault -> op error QUOTA_EXCEEDED 403 quotaInfo")
    call("GET", ins + "/skyx-j1-a2", status=404)
    op = call("POST", ins, body, ref="Operation")   # count 1: used up
    check("error" not in call("POST", f"{P}/zones/{Z}/operations/{op['name']}/wait"),
          "fault with count 1 applies once")

    # Firewalls (global operations).
    fw = {"name": "skyx-j1", "allowed": [{"IPProtocol": "tcp", "ports": ["7000-7001"]}],
          "sourceRanges": ["203.0.113.7/32"], "targetTags": ["skyx-j1"]}
    call("POST", f"{P}/global/firewalls", dict(fw, allowed=[{"IPProtocol": "icmp",
                                                              "ports": ["1"]}]), 400)
    call("POST", f"{P}/global/firewalls", dict(fw, sourceRanges=["1.2.3.4/40"]), 400)
    op = call("POST", f"{P}/global/firewalls", fw, ref="Operation")
    check("zone" not in op and "/global/operations/" in op["selfLink"],
          "firewall insert -> global op")
    call("POST", f"{P}/global/operations/{op['name']}/wait", ref="Operation")
    got = call("GET", f"{P}/global/firewalls/skyx-j1", ref="Firewall")
    check(got["direction"] == "INGRESS" and got["priority"] == 1000 and
          got["network"].endswith(f"/projects/{P}/global/networks/default"), "firewall defaults")
    call("PATCH", f"{P}/global/firewalls/skyx-j1", {"sourceRanges": ["0.0.0.0/0"]}, 400)
    op = call("PATCH", f"{P}/global/firewalls/skyx-j1", {"name": "skyx-j1", "sourceRanges": [
        "203.0.113.7/32", "198.51.100.1/32"]}, ref="Operation")
    check(call("GET", f"{P}/global/operations/{op['name']}")["status"] == "RUNNING" and
          call("GET", f"{P}/global/operations/{op['name']}")["status"] == "DONE", "patch op steps")
    got = call("GET", f"{P}/global/firewalls/skyx-j1", ref="Firewall")
    check(len(got["sourceRanges"]) == 2 and got["targetTags"] == ["skyx-j1"], "patch merged")
    names, tok = [], ""
    while True:
        page = call("GET", f"{P}/global/firewalls?maxResults=2" + tok, ref="FirewallList")
        names += [f["name"] for f in page.get("items", [])]
        if "nextPageToken" not in page:
            break
        tok = "&pageToken=" + page["nextPageToken"]
    check(len(names) == 5 and "skyx-j1" in names, f"firewall paging: {names}")
    lst = call("GET", f"{P}/global/firewalls?filter=name%20eq%20skyx-.*", ref="FirewallList")
    check([f["name"] for f in lst["items"]] == ["skyx-j1"], "firewall filter name eq skyx-.*")
    op = call("DELETE", f"{P}/global/firewalls/skyx-j1", ref="Operation")
    call("POST", f"{P}/global/operations/{op['name']}/wait")
    call("GET", f"{P}/global/firewalls/skyx-j1", status=404)
    check(True, "firewall delete -> gone")

    # Guest poweroff stops; delete: STOPPING, then 404.
    call("POST", "/_contract/guest-poweroff", {"project": P, "zone": Z, "instance": "skyx-j1-a0"})
    st = [call("GET", ins + "/skyx-j1-a0", ref="Instance")["status"] for _ in range(2)]
    check(st == ["STOPPING", "TERMINATED"], "guest poweroff -> STOPPING, TERMINATED")
    op = call("DELETE", ins + "/skyx-j1-a0", ref="Operation")
    check(call("GET", ins + "/skyx-j1-a0")["status"] == "STOPPING", "delete -> STOPPING")
    call("POST", f"{P}/zones/{Z}/operations/{op['name']}/wait")
    call("GET", ins + "/skyx-j1-a0", status=404)
    call("DELETE", ins + "/skyx-j1-a0", status=404)
    check(True, "delete op DONE -> 404")
    e = call("POST", ins + "/skyx-j1-a2/stop", status=501)
    check("compute.instances.stop" in e["error"]["message"], "unimplemented method -> 501")
    call("GET", f"{P}/nonsense", status=404)
    reqs = call("GET", "/_contract/requests?project=p1")
    check(reqs[0]["status"] == 401 and reqs[0]["body"]["name"] == "skyx-j1-a0" and
          reqs[-1]["path"] == "/compute/v1/projects/p1/nonsense", f"request log ({len(reqs)})")
    state = call("GET", "/_contract/state?project=p1")
    check([i["name"] for i in state["instances"]] == ["skyx-j1-a2"], "state lists instances")
    check(call("GET", "/_contract/requests?project=p2") == [], "other projects are separate")


if __name__ == "__main__":
    main()
