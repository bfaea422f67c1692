"""A local contract server for Google Compute Engine's REST API v1 (a stand-in, not an emulator).

It is driven by Google's own API description: the Compute Engine discovery document
(compute.v1.json, shipped in the PyPI package google-api-python-client under
googleapiclient/discovery_cache/documents/). Through discovery.py every request is routed by the
document's URL templates and checked against it: unknown/required/enum/pattern query and path
parameters, and the JSON body against the method's request schema (unknown fields, JSON types,
formats, enums, patterns, `annotations.required` for the method). On top of that it enforces the
limits Google states in field descriptions (metadata sizes, RFC1035 names, firewall ports and
ranges, ...; see docs/cloud-contracts.md A) and answers with the documented shapes.

What it implements (per project; any project id matching the document's pattern springs into
being with an auto-mode `global/networks/default` and the four default firewall rules a new
project has): regions.get, zones.get, machineTypes.get, images.get/getFromFamily (debian-cloud),
networks.get, instances.insert/get/list/aggregatedList/delete/setLabels/setMetadata,
firewalls.insert/get/list/patch/delete, zoneOperations.get/wait, globalOperations.get/wait.
Every other documented method answers 501; undocumented paths 404.

Lifecycle (deterministic, driven by the client's polling, not by clocks):
  * a mutating call returns an Operation in PENDING; each get of it advances it one step
    (PENDING -> RUNNING -> DONE); wait makes it DONE at once. Effects land when it becomes DONE.
  * an inserted instance appears (PROVISIONING) when its insert op is DONE; each instances.get
    returns the current status and then advances it: PROVISIONING -> STAGING -> RUNNING. On
    becoming RUNNING it gets its internal IP (10.128.0.x) and, if it asked for a ONE_TO_ONE_NAT
    access config, an external natIP from --nat-pool (freed on delete/stop).
  * delete: the instance is STOPPING until the delete op is DONE, then gone (404).
  * scheduling.maxRunDuration / terminationTime are honoured lazily (checked on every request of
    the project): the instanceTerminationAction (default STOP) is then applied.
  * list/aggregatedList: `filter` (a subset of both documented grammars, see parse_filter;
    the rest is a 400), `orderBy` name | creationTimestamp desc, `maxResults` + `pageToken`.
    aggregatedList answers every zone of REGIONS, with the NO_RESULTS_ON_PAGE warning where a
    zone has no instance on the page (as Google lists every zone).
Synchronous errors use Google's envelope {"error": {"code", "message", "errors": [{"message",
"domain": "global", "reason"}]}}: 400 invalid (400 required for a missing required field, as
Google's "Required field '...' not specified" errors), 401 required, 404 notFound, 409
alreadyExists, 412 conditionNotMet (stale label/metadata fingerprint), 501 notImplemented.
Capacity and quota errors arrive as Google sends them: in the DONE Operation's `error`.
Test control, outside /compute/v1/ and scoped by project so parallel tests never interfere:
  POST   /_contract/faults  {"project","zone"|"region","code","count"?}  inserts there end in an
         Operation error (ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS] or QUOTA_EXCEEDED)
  DELETE /_contract/faults?project=P
  GET    /_contract/requests?project=P   every API request of P: method, path, query, body, status
  GET    /_contract/state?project=P      instances, firewalls, operations, faults, natIPs in use
  POST   /_contract/guest-poweroff {"project","zone","instance"}   the guest ran `poweroff`

What it does NOT do: no machine runs (unless --boot-hook is given: `CMD boot FILE.json` when an
instance becomes RUNNING, `CMD halt PROJECT ZONE NAME` when it is deleted or its scheduling
stops/deletes it; not on a guest poweroff, which the guest did itself), no real auth (any
non-empty Bearer token is accepted), no IAM, no quotas except injected ones, no `fields` partial
responses, no persistence, no disks/snapshots resources (only images from debian-cloud).
Python 3.11 standard library only.
"""
import argparse
import base64
import hashlib
import ipaddress
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from discovery import ApiError, Discovery, invalid, not_found  # noqa: E402

# Google returns links on this host, not compute.googleapis.com (cloud-contracts.md A.2).
BASE = "https://www.googleapis.com/compute/v1/"
_URL_PREFIX = re.compile(r"https://(?:www\.googleapis\.com|compute\.googleapis\.com)/compute/v1/")
RFC1035 = r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"

# Regions and their zone letters: from general knowledge of Google's published zone list, NOT
# from the discovery document (which names no regions). Covers every gcp region in catalog/.
_LETTERS = {"us-central1": "abcf", "us-east1": "bcd", "europe-west1": "bcd"}
REGIONS = {r: [f"{r}-{c}" for c in _LETTERS.get(r, "abc")] for r in """
    africa-south1 asia-east1 asia-east2 asia-northeast1 asia-northeast2 asia-northeast3
    asia-south1 asia-south2 asia-southeast1 asia-southeast2 australia-southeast1
    australia-southeast2 europe-central2 europe-north1 europe-southwest1 europe-west1
    europe-west10 europe-west12 europe-west2 europe-west3 europe-west4 europe-west6 europe-west8
    europe-west9 me-central1 me-central2 me-west1 northamerica-northeast1
    northamerica-northeast2 southamerica-east1 southamerica-west1 us-central1 us-east1 us-east4
    us-east5 us-south1 us-west1 us-west2 us-west3 us-west4""".split()}
ZONES = {z: r for r, zs in REGIONS.items() for z in zs}

# Predefined machine types accepted everywhere (vCPU counts; MB of memory per vCPU). Real
# availability differs by zone; this is deliberately simple.
_FAMILIES = {
    "e2-standard": ((2, 4, 8, 16, 32), 4096), "e2-highcpu": ((2, 4, 8, 16, 32), 1024),
    "e2-highmem": ((2, 4, 8, 16), 8192),
    "n2-standard": ((2, 4, 8, 16, 32, 48, 64, 80, 96, 128), 4096),
    "n2-highcpu": ((2, 4, 8, 16, 32, 48, 64, 80, 96), 1024),
    "n2-highmem": ((2, 4, 8, 16, 32, 48, 64, 80, 96, 128), 8192),
    "n2d-standard": ((2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224), 4096),
    "n2d-highcpu": ((2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224), 1024),
    "n2d-highmem": ((2, 4, 8, 16, 32, 48, 64, 80, 96), 8192),
    "c2-standard": ((4, 8, 16, 30, 60), 4096),
    "t2a-standard": ((1, 2, 4, 8, 16, 32, 48), 4096),
}
_SHARED = {"e2-micro": 1024, "e2-small": 2048, "e2-medium": 4096}


def machine_shape(name):
    """(vCPUs, memory MB) of a machine type name, or None if it does not exist."""
    if name in _SHARED:
        return 2, _SHARED[name]
    m = re.fullmatch(r"([a-z0-9]+-[a-z]+)-(\d+)", name)
    if m and m.group(1) in _FAMILIES and int(m.group(2)) in _FAMILIES[m.group(1)][0]:
        return int(m.group(2)), int(m.group(2)) * _FAMILIES[m.group(1)][1]
    # Custom types: "CPUS is 1 or an even number ..., memory must be a multiple of 256 MB"
    # (Instance.machineType description).
    m = re.fullmatch(r"(?:(?:e2|n2|n2d)-)?custom-(\d+)-(\d+)(?:-ext)?", name)
    if m and (int(m.group(1)) == 1 or int(m.group(1)) % 2 == 0) and int(m.group(1)) > 0 \
            and int(m.group(2)) % 256 == 0 and int(m.group(2)) > 0:
        return int(m.group(1)), int(m.group(2))
    return None


# debian-cloud images (one per family). Names follow Google's scheme; the date is made up.
IMAGES = {"debian-12-bookworm-v20261105": ("debian-12", "X86_64"),
          "debian-12-bookworm-arm64-v20261105": ("debian-12-arm64", "ARM64")}
DEFAULT_FIREWALLS = {  # what a new project's auto-mode default network comes with
    "default-allow-internal": ([{"IPProtocol": "tcp", "ports": ["0-65535"]},
                                {"IPProtocol": "udp", "ports": ["0-65535"]},
                                {"IPProtocol": "icmp"}], ["10.128.0.0/9"], 65534),
    "default-allow-ssh": ([{"IPProtocol": "tcp", "ports": ["22"]}], ["0.0.0.0/0"], 65534),
    "default-allow-rdp": ([{"IPProtocol": "tcp", "ports": ["3389"]}], ["0.0.0.0/0"], 65534),
    "default-allow-icmp": ([{"IPProtocol": "icmp"}], ["0.0.0.0/0"], 65534),
}
FAULTS = ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
          "QUOTA_EXCEEDED")


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_id():
    return str(random.randrange(10**18, 2**63))   # uint64, as a string (proto3 JSON)


def fingerprint(value):
    return base64.b64encode(hashlib.sha256(json.dumps(value, sort_keys=True).encode())
                            .digest()[:8]).decode()


def zone_url(p, z):
    return f"{BASE}projects/{p}/zones/{z}"


class Op:
    """An Operation resource plus the effect to apply when it becomes DONE."""

    def __init__(self, proj, kind, target, target_id, zone=None, on_done=None, fault=None):
        self.name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}-" \
                    f"{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:8]}"
        self.zone, self.on_done, self.fault = zone, on_done, fault
        scope = zone_url(proj.id, zone) if zone else f"{BASE}projects/{proj.id}/global"
        self.res = {"kind": "compute#operation", "id": new_id(), "name": self.name,
                    "operationType": kind, "targetLink": target, "targetId": target_id,
                    "status": "PENDING", "user": "contract-test@example.com", "progress": 0,
                    "insertTime": now(), "selfLink": f"{scope}/operations/{self.name}"}
        if zone:
            self.res["zone"] = zone_url(proj.id, zone)

    def advance(self, to_done=False):
        """get: one step (PENDING -> RUNNING -> DONE); wait: straight to DONE."""
        r = self.res
        if r["status"] == "DONE":
            return
        if r["status"] == "PENDING" and not to_done:
            r.update(status="RUNNING", startTime=now())
            return
        r.setdefault("startTime", now())
        r.update(status="DONE", progress=100, endTime=now())
        if self.fault:
            r.update(self.fault)        # a failed op is DONE *with* error
        if self.on_done:
            self.on_done()


class Instance:
    def __init__(self, res, zone, want_nat):
        self.res, self.zone, self.want_nat = res, zone, want_nat
        self.deleting = False
        self.running_since = None
        self.nat_ips = []            # ephemeral external IPs taken from the pool


class Project:
    def __init__(self, pid):
        self.id, self.number = pid, str(random.randrange(10**11, 10**12))
        self.instances = {}          # (zone, name) -> Instance
        self.firewalls = {}          # name -> Firewall resource
        self.ops = {}                # name -> Op
        self.request_ids = {}        # requestId -> Op (dedup of retries)
        self.pending = set()         # ("instance", zone, name) / ("firewall", name) being inserted
        self.faults = []             # {"zone" | "region", "code", "count"}
        self.requests = []           # what /_contract/requests returns
        self.next_ip = 2
        self.network = {"kind": "compute#network", "id": new_id(), "creationTimestamp": now(),
                        "name": "default", "description": "Default network for the project",
                        "selfLink": f"{BASE}projects/{pid}/global/networks/default",
                        "autoCreateSubnetworks": True, "routingConfig": {"routingMode": "REGIONAL"},
                        "subnetworks": [f"{BASE}projects/{pid}/regions/{r}/subnetworks/default"
                                        for r in REGIONS]}
        for name, (allowed, ranges, prio) in DEFAULT_FIREWALLS.items():
            self.firewalls[name] = firewall_output(self, {
                "name": name, "allowed": allowed, "sourceRanges": ranges, "priority": prio})


class State:
    def __init__(self, disc, nat_pool, boot_hook):
        self.disc, self.boot_hook = disc, boot_hook
        self.lock = threading.RLock()   # one lock: requests are tiny, ordering stays simple
        self.projects = {}
        self.nat_pool = [str(a) for a in ipaddress.ip_network(nat_pool).hosts()]
        self.nat_used = set()
        # The boot hook reads the instance resource from a file here.
        self.hook_dir = tempfile.mkdtemp(prefix="gce-contract-") if boot_hook else None

    def project(self, pid):
        if pid not in self.projects:
            self.projects[pid] = Project(pid)
        return self.projects[pid]

    def hook(self, *args):
        """Runs `--boot-hook CMD args...` without waiting; its output goes to our log."""
        if not self.boot_hook:
            return
        cmd = shlex.split(self.boot_hook) + [str(a) for a in args]
        log("boot hook: " + " ".join(cmd))
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
        threading.Thread(target=lambda: log(f"boot hook {args[0]} exited {p.wait()}"),
                         daemon=True).start()

    def became_running(self, proj, inst):
        inst.res.update(status="RUNNING", lastStartTimestamp=now())
        inst.running_since = time.time()
        for nic, nat in zip(inst.res["networkInterfaces"], inst.want_nat):
            if "networkIP" not in nic:   # one flat 10.128.0.0/16 per project (simplification)
                nic["networkIP"] = f"10.128.{proj.next_ip // 256}.{proj.next_ip % 256}"
                proj.next_ip += 1
            for ac in nic["accessConfigs"]:
                if nat and "natIP" not in ac:
                    free = [a for a in self.nat_pool if a not in self.nat_used]
                    if not free:
                        log("NAT pool exhausted: instance left without natIP")
                        continue
                    ac["natIP"] = free[0]
                    self.nat_used.add(free[0])
                    inst.nat_ips.append(free[0])
        if self.boot_hook:
            path = os.path.join(self.hook_dir, f"{proj.id}.{inst.zone}.{inst.res['name']}.json")
            with open(path, "w") as f:
                json.dump(inst.res, f, indent=1)
            self.hook("boot", path)

    def gone(self, proj, inst, hook=True):
        """The VM no longer runs (deleted or stopped): its ephemeral external IP is released."""
        for nic in inst.res["networkInterfaces"]:
            for ac in nic["accessConfigs"]:
                if ac.get("natIP") in inst.nat_ips:
                    del ac["natIP"]
        self.nat_used.difference_update(inst.nat_ips)
        inst.nat_ips = []
        if hook:
            self.hook("halt", proj.id, inst.zone, inst.res["name"])

    def expire(self, proj):
        """scheduling.maxRunDuration / terminationTime, applied lazily on each request."""
        for key, inst in list(proj.instances.items()):
            sch = inst.res["scheduling"]
            if inst.res["status"] != "RUNNING" or inst.deleting:
                continue
            deadlines = []
            if "maxRunDuration" in sch:
                d = sch["maxRunDuration"]
                deadlines.append(inst.running_since + int(d.get("seconds", 0)) +
                                 int(d.get("nanos", 0)) / 1e9)
            if "terminationTime" in sch:
                deadlines.append(datetime.fromisoformat(
                    sch["terminationTime"].replace("Z", "+00:00")).timestamp())
            if deadlines and time.time() >= min(deadlines):
                self.gone(proj, inst)
                if sch.get("instanceTerminationAction") == "DELETE":
                    del proj.instances[key]
                else:   # "STOP ... default action"
                    inst.res["status"] = "TERMINATED"


def ref_path(url):
    """Full or partial resource URL -> path relative to the API root."""
    return _URL_PREFIX.sub("", url or "", count=1).lstrip("/")


def bad_field(field, value, why):
    return invalid(f"Invalid value for field '{field}': '{value}'. {why}")


# ---------------------------------------------------------------------------------------------
# Validation beyond the schema: what Google states in field descriptions (cloud-contracts.md A.2)

LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")   # Google's labels doc, not the discovery doc
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


def check_labels(labels, field):
    if len(labels) > 64:
        raise bad_field(field, "", "At most 64 labels.")
    for k, v in labels.items():
        if not LABEL_KEY.fullmatch(k):
            raise bad_field(f"{field}.{k}", k, "Label keys must start with a lowercase letter "
                            "and contain only lowercase letters, digits, '_' and '-' (<= 63).")
        if not LABEL_VALUE.fullmatch(v):
            raise bad_field(f"{field}.{k}", v, "Label values may contain only lowercase letters, "
                            "digits, '_' and '-' (<= 63).")


def check_metadata(md, field):
    total, seen = 0, set()
    for i, item in enumerate(md.get("items", [])):
        key, value = item.get("key", ""), item.get("value", "")
        # Metadata.items[].key carries its pattern in the document (checked by discovery.py);
        # the size limits come from the descriptions.
        if key in seen:
            raise bad_field(f"{field}.items[{i}].key", key, "Duplicate metadata key.")
        seen.add(key)
        if len(value.encode()) > 262144:
            raise bad_field(f"{field}.items[{i}].value", key,
                            "Metadata values must be at most 262144 bytes.")
        total += len(key.encode()) + len(value.encode())
    if total >= 512 * 1024:
        raise bad_field(f"{field}.items", "", "The total size of all keys and values must be "
                        "less than 512 KB.")


def resolve_network(proj, url, field):
    path = ref_path(url or "global/networks/default")
    m = re.fullmatch(r"(?:projects/([^/]+)/)?global/networks/([^/]+)", path)
    if not m:
        raise bad_field(field, url, "The URL is malformed.")
    p, n = m.group(1) or proj.id, m.group(2)
    if p != proj.id or n != "default":
        raise not_found(f"The resource 'projects/{p}/global/networks/{n}' was not found")
    return proj.network["selfLink"]


def resolve_image(url, field, own_project):
    """An image name of debian-cloud, from a (family) image URL; else 404 as Google."""
    path = ref_path(url)
    m = re.fullmatch(r"(?:projects/([^/]+)/)?global/images/(family/)?([^/]+)", path)
    if not m:
        raise bad_field(field, url, "The URL is malformed.")
    p = m.group(1) or own_project
    for name, (fam, _) in IMAGES.items():
        if p == "debian-cloud" and (name, fam)[bool(m.group(2))] == m.group(3):
            return name
    raise not_found(f"The resource 'projects/{p}/global/images/{m.group(2) or ''}{m.group(3)}' "
                    "was not found")


def check_instance(proj, zone, body):
    """Semantic checks of an instances.insert body; returns (output resource, want_nat list)."""
    name = body["name"]
    if "labels" in body:
        check_labels(body["labels"], "resource.labels")
    if "metadata" in body:
        check_metadata(body["metadata"], "resource.metadata")
    # machineType: "Full or partial URL ... zones/zone/machineTypes/machine-type".
    mt = body.get("machineType")
    if not mt:
        raise ApiError(400, "Required field 'resource.machineType' not specified", "required")
    m = re.fullmatch(r"(?:projects/([^/]+)/)?zones/([^/]+)/machineTypes/([^/]+)", ref_path(mt))
    if not m or (m.group(1) or proj.id) != proj.id:
        raise bad_field("resource.machineType", mt, "The URL is malformed.")
    if m.group(2) != zone:
        raise bad_field("resource.machineType", mt, f"Machine type specified '{m.group(3)}' is "
                        f"in a different scope than the instance ('{zone}').")
    if machine_shape(m.group(3)) is None:
        raise bad_field("resource.machineType", mt, f"Machine type with name '{m.group(3)}' "
                        f"does not exist in zone '{zone}'.")
    out = dict(body, kind="compute#instance", id=new_id(), creationTimestamp=now(),
               zone=zone_url(proj.id, zone), status="PROVISIONING",
               selfLink=f"{zone_url(proj.id, zone)}/instances/{name}",
               machineType=f"{zone_url(proj.id, zone)}/machineTypes/{m.group(3)}",
               cpuPlatform="Unknown CPU Platform", startRestricted=False,
               labelFingerprint=fingerprint(body.get("labels", {})),
               fingerprint=fingerprint(name), satisfiesPzi=False, satisfiesPzs=False)
    out.setdefault("canIpForward", False)
    out.setdefault("deletionProtection", False)
    md = body.get("metadata", {})
    out["metadata"] = dict(md, kind="compute#metadata", fingerprint=fingerprint(md.get("items")))
    if "tags" in body:
        out["tags"] = dict(body["tags"], fingerprint=fingerprint(body["tags"].get("items")))
    out["disks"] = check_disks(proj, zone, name, body.get("disks", []))
    out["networkInterfaces"], want_nat = check_nics(proj, zone, body.get("networkInterfaces", []))
    sas = body.get("serviceAccounts", [])
    if len(sas) > 1:   # "Only one service account per VM instance is supported."
        raise bad_field("resource.serviceAccounts", "", "Only one service account per VM "
                        "instance is supported.")
    for i, sa in enumerate(sas):
        email = sa.get("email", "")
        if email == "default":
            email = f"{proj.number}-compute@developer.gserviceaccount.com"
        elif not re.fullmatch(r"[^@\s]+@[-a-z0-9.]+\.iam\.gserviceaccount\.com|"
                              r"\d+-compute@developer\.gserviceaccount\.com", email):
            raise bad_field(f"resource.serviceAccounts[{i}].email", email,
                            "Invalid service account email.")
        for s in sa.get("scopes", []):   # gcloud expands aliases; the API takes URLs (unverified)
            if not s.startswith("https://www.googleapis.com/auth/"):
                raise bad_field(f"resource.serviceAccounts[{i}].scopes", s, "Invalid scope.")
        out["serviceAccounts"] = [{"email": email, "scopes": sa.get("scopes", [])}]
    out["scheduling"] = check_scheduling(body.get("scheduling", {}))
    return out, want_nat


def check_disks(proj, zone, name, disks):
    if not disks:
        raise ApiError(400, "Required field 'resource.disks' not specified", "required")
    out = []
    for i, d in enumerate(disks):
        f = f"resource.disks[{i}]"
        if bool(d.get("boot")) != (i == 0):   # Google: "Boot disk must be the first disk attached"
            raise bad_field(f, "", "Boot disk must be the first disk attached to the instance.")
        ip = d.get("initializeParams")
        if ip is not None and d.get("source"):   # "mutually exclusive with the source property"
            raise bad_field(f, "", "initializeParams and source are mutually exclusive.")
        if d.get("source"):    # no disks resource here: every existing-disk reference is unknown
            raise not_found(f"The resource '{ref_path(d['source'])}' was not found")
        ip = ip or {}
        if ip.get("sourceSnapshot"):
            raise not_found(f"The resource '{ref_path(ip['sourceSnapshot'])}' was not found")
        size = int(ip.get("diskSizeGb", 10 if i == 0 else 500))
        if i == 0:
            if not ip.get("sourceImage"):   # one of sourceImage/sourceSnapshot/source required
                raise ApiError(400, f"Required field '{f}.initializeParams.sourceImage' not "
                               "specified", "required")
            image = resolve_image(ip["sourceImage"], f"{f}.initializeParams.sourceImage",
                                  proj.id)
        if size < 10:  # "The size must be at least 10 GB." (and the images are 10 GB)
            raise bad_field(f"{f}.initializeParams.diskSizeGb", size, "The size must be at "
                            "least 10 GB.")
        disk = ip.get("diskName") or (name if i == 0 else f"{name}-{i}")
        o = {"kind": "compute#attachedDisk", "type": d.get("type", "PERSISTENT"),
             "mode": d.get("mode", "READ_WRITE"), "index": i, "boot": i == 0,
             "autoDelete": d.get("autoDelete", False),
             "deviceName": d.get("deviceName", f"persistent-disk-{i}"),
             "source": f"{zone_url(proj.id, zone)}/disks/{disk}",
             "interface": d.get("interface", "SCSI"), "diskSizeGb": str(size)}
        if i == 0:
            o.update(licenses=[f"{BASE}projects/debian-cloud/global/licenses/debian-12-bookworm"],
                     architecture=IMAGES[image][1],
                     guestOsFeatures=[{"type": t} for t in ("UEFI_COMPATIBLE", "GVNIC",
                                                           "VIRTIO_SCSI_MULTIQUEUE")])
        out.append(o)
    return out


def check_nics(proj, zone, nics):
    if not nics:   # every real insert names one (gcloud always sends it); unverified as a rule
        raise ApiError(400, "Required field 'resource.networkInterfaces' not specified",
                       "required")
    region, out, want_nat = ZONES[zone], [], []
    for i, n in enumerate(nics):
        f = f"resource.networkInterfaces[{i}]"
        network = resolve_network(proj, n.get("network"), f"{f}.network")
        sub = n.get("subnetwork")
        if sub:
            m = re.fullmatch(r"(?:projects/([^/]+)/)?regions/([^/]+)/subnetworks/([^/]+)",
                             ref_path(sub))
            if not m:
                raise bad_field(f"{f}.subnetwork", sub, "The URL is malformed.")
            if (m.group(1) or proj.id, m.group(2), m.group(3)) != (proj.id, region, "default"):
                raise not_found(f"The resource '{ref_path(sub)}' was not found")
        if "networkIP" in n:
            try:
                ipaddress.IPv4Address(n["networkIP"])
            except ValueError:
                raise bad_field(f"{f}.networkIP", n["networkIP"], "Invalid IPv4 address.")
        acs = n.get("accessConfigs", [])
        if len(acs) > 1:   # "Currently, only one access config, ONE_TO_ONE_NAT, is supported."
            raise bad_field(f"{f}.accessConfigs", "", "Only one access config is supported.")
        o = dict(n, kind="compute#networkInterface", name=f"nic{i}", network=network,
                 subnetwork=f"{BASE}projects/{proj.id}/regions/{region}/subnetworks/default",
                 fingerprint=fingerprint([proj.id, zone, i]), stackType=n.get("stackType",
                                                                               "IPV4_ONLY"))
        o["accessConfigs"] = []
        for j, ac in enumerate(acs):
            if ac.get("type", "ONE_TO_ONE_NAT") != "ONE_TO_ONE_NAT":
                raise bad_field(f"{f}.accessConfigs[{j}].type", ac["type"], "In accessConfigs "
                                "(IPv4) the only option is ONE_TO_ONE_NAT.")
            if "natIP" in ac:   # a static address the caller owns: used as given
                try:
                    ipaddress.IPv4Address(ac["natIP"])
                except ValueError:
                    raise bad_field(f"{f}.accessConfigs[{j}].natIP", ac["natIP"], "Invalid IP.")
            o["accessConfigs"].append(dict(ac, kind="compute#accessConfig", type="ONE_TO_ONE_NAT",
                                           name=ac.get("name", "External NAT"),
                                           networkTier=ac.get("networkTier", "PREMIUM")))
        out.append(o)
        want_nat.append(bool(acs))
    return out, want_nat


def check_scheduling(s):
    """Only what the document states: preemptible instances "cannot be automatically restarted"
    and TERMINATE is their "only possible" onHostMaintenance. SPOT is treated as preemptible
    (Spot VMs are the successor of preemptible VMs; that equivalence is general knowledge)."""
    spot = s.get("preemptible") or s.get("provisioningModel") == "SPOT"
    if spot and s.get("automaticRestart") is True:
        raise bad_field("resource.scheduling.automaticRestart", "true", "Preemptible instances "
                        "cannot be automatically restarted.")
    if spot and s.get("onHostMaintenance") == "MIGRATE":
        raise bad_field("resource.scheduling.onHostMaintenance", "MIGRATE", "For preemptible "
                        "instances, the only possible behavior is TERMINATE.")
    if "terminationTime" in s:   # "in RFC3339 text format"
        try:
            datetime.fromisoformat(s["terminationTime"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise bad_field("resource.scheduling.terminationTime", s["terminationTime"],
                            "Must be an RFC3339 timestamp.")
    out = dict(s)
    out.setdefault("provisioningModel", "STANDARD")
    out.setdefault("preemptible", False)
    out.setdefault("automaticRestart", not spot)
    out.setdefault("onHostMaintenance", "TERMINATE" if spot else "MIGRATE")
    return out


_PROTOCOLS = {"tcp", "udp", "icmp", "esp", "ah", "ipip", "sctp", "all"}  # "all": gcloud's


def firewall_output(proj, body, old=None):
    """Checks a Firewall (insert, or the merged result of a patch) and returns the resource."""
    f = dict(body)
    f["network"] = resolve_network(proj, f.get("network"), "resource.network")
    f.setdefault("direction", "INGRESS")
    f.setdefault("priority", 1000)
    if not 0 <= int(f["priority"]) <= 65535:   # "an integer between 0 and 65535"
        raise bad_field("resource.priority", f["priority"], "Must be between 0 and 65535.")
    if bool(f.get("allowed")) == bool(f.get("denied")):   # exactly one (general knowledge)
        raise bad_field("resource", "", "Exactly one of allowed or denied must be specified.")
    kind = "allowed" if f.get("allowed") else "denied"
    for i, rule in enumerate(f[kind]):
        where = f"resource.{kind}[{i}]"
        proto = rule.get("IPProtocol", "")
        if not proto:   # "The protocol type is required when creating a firewall rule."
            raise ApiError(400, f"Required field '{where}.IPProtocol' not specified", "required")
        if proto not in _PROTOCOLS and not (proto.isdigit() and int(proto) <= 255):
            raise bad_field(f"{where}.IPProtocol", proto, "Unknown protocol.")
        for port in rule.get("ports", []):
            # "only applicable for the UDP or TCP protocol" (SCTP also takes ports in practice)
            if proto not in ("tcp", "udp", "sctp", "6", "17", "132"):
                raise bad_field(f"{where}.ports", port, "Ports may be given only for TCP, UDP "
                                "or SCTP.")
            m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", port)
            if not m or int(m.group(1)) > 65535 or int(m.group(2) or m.group(1)) > 65535 \
                    or int(m.group(1)) > int(m.group(2) or m.group(1)):
                raise bad_field(f"{where}.ports", port, "Must be a port or a port range N-M "
                                "within 0-65535.")
    for field in ("sourceRanges", "destinationRanges"):
        for r in f.get(field, []):
            try:
                ipaddress.ip_network(r, strict=False)
            except ValueError:
                raise bad_field(f"resource.{field}", r, "Must be a CIDR range.")
    if f["direction"] == "EGRESS" and f.get("sourceTags"):
        raise bad_field("resource.sourceTags", "", "For EGRESS traffic, you cannot specify "
                        "the sourceTags fields.")
    for field in ("sourceTags", "targetTags"):
        for t in f.get(field, []):
            if not re.fullmatch(RFC1035, t):   # network tags: RFC1035 (Tags.items pattern)
                raise bad_field(f"resource.{field}", t, f"Must be a match of regex '{RFC1035}'")
    f.update(kind="compute#firewall", selfLink=f"{BASE}projects/{proj.id}/global/firewalls/"
             f"{f['name']}", id=(old or {}).get("id") or new_id(),
             creationTimestamp=(old or {}).get("creationTimestamp") or now())
    f.setdefault("description", "")
    f.setdefault("disabled", False)
    f.setdefault("logConfig", {"enable": False})
    if f["direction"] == "INGRESS" and not any(f.get(k) for k in (
            "sourceRanges", "sourceTags", "sourceServiceAccounts")):
        f["sourceRanges"] = ["0.0.0.0/0"]   # what Google fills in (general knowledge)
    return f


# ---------------------------------------------------------------------------------------------
# List filters and paging

def filter_error(text, why):
    return invalid(f"Invalid value for field 'filter': '{text}'. {why}")


def field_value(res, field):
    v = res
    for part in field.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if v is None or isinstance(v, (list, dict)) else str(v)


_TOKEN = re.compile(r'\s*(?:(?P<paren>[()])|(?P<quoted>"(?:[^"\\]|\\.)*")|'
                    r'(?P<op>!=|<=|>=|=|<|>|:)|(?P<word>[^\s()"=!<>:]+))')


def parse_filter(text, props):
    """The two grammars of the `filter` parameter (instances.list description), in the subset
    this server supports; anything else is a 400 rather than a silent mismatch.
      regex:   FIELD eq RE / FIELD ne RE      (one expression; RE must match the whole field)
      AIP-160: FIELD = V, FIELD != V, FIELD:V, FIELD:* (presence); V bare or "quoted";
               several expressions, optionally parenthesised, ANDed (implicitly or by AND).
    FIELD is a dotted path whose first part is a documented property (labels.KEY, name,
    status, scheduling.provisioningModel, ...). Returns a predicate over resources."""
    text = text or ""
    if not text.strip():
        return lambda res: True
    m = re.fullmatch(r"\s*([A-Za-z][\w.-]*)\s+(eq|ne)\s+(.+?)\s*", text, re.S)
    if m:
        field, op, rx = m.groups()
        if re.search(r"\s(eq|ne)\s", rx):
            raise filter_error(text, "Only one regular-expression comparison is supported.")
        if len(rx) >= 2 and rx[0] == rx[-1] == '"':
            rx = rx[1:-1]
        check_filter_field(text, field, props)
        try:
            c = re.compile(rx)
        except re.error as e:
            raise filter_error(text, f"Bad regular expression: {e}.")
        return lambda res: (isinstance(field_value(res, field), str) and
                            c.fullmatch(field_value(res, field)) is not None) == (op == "eq")
    toks, pos = [], 0
    while pos < len(text):
        t = _TOKEN.match(text, pos)
        if not t or t.end() == pos:
            if text[pos:].strip():
                raise filter_error(text, "Cannot parse.")
            break
        pos = t.end()
        kind = t.lastgroup
        toks.append((kind, t.group(kind)))

    def conj(i, depth):
        preds = []
        while i < len(toks):
            kind, val = toks[i]
            if kind == "paren" and val == ")":
                if depth == 0:
                    raise filter_error(text, "Unbalanced parentheses.")
                return preds, i + 1
            if kind == "paren":
                sub, i = conj(i + 1, depth + 1)
                preds.append(lambda res, sub=sub: all(p(res) for p in sub))
                continue
            if kind == "word" and val == "AND" and preds:
                i += 1
                continue
            if kind == "word" and val in ("OR", "NOT") or val.startswith("-"):
                raise filter_error(text, f"'{val}' is not supported by this contract server.")
            if i + 3 > len(toks):
                raise filter_error(text, "Incomplete expression.")
            (fk, field), (ok, op), (vk, value) = toks[i:i + 3]
            if fk != "word" or ok != "op" or vk not in ("word", "quoted"):
                raise filter_error(text, "Expected FIELD OPERATOR VALUE.")
            if op not in ("=", "!=", ":"):
                raise filter_error(text, f"Operator '{op}' is not supported by this contract "
                                   "server.")
            check_filter_field(text, field, props)
            if vk == "quoted":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            preds.append(comparison(field, op, value, vk == "quoted"))
            i += 3
        if depth:
            raise filter_error(text, "Unbalanced parentheses.")
        return preds, i

    preds, _ = conj(0, 0)
    return lambda res: all(p(res) for p in preds)


def comparison(field, op, value, quoted):
    def test(res):
        v = field_value(res, field)
        if op == ":" and value == "*" and not quoted:
            return v not in (None, "", [], {})
        hit = value in [str(x) for x in v] if isinstance(v, list) else v == value
        return hit if op in ("=", ":") else not hit
    return test


def check_filter_field(text, field, props):
    if field.split(".")[0] not in props:
        raise filter_error(text, f"Unknown field '{field}'.")


def list_page(items, p, scope):
    """Sorting (orderBy), then maxResults/pageToken paging. Returns (page, nextPageToken)."""
    order = p.get("orderBy") or "name"
    if order == "name":
        items.sort(key=lambda r: r["name"])
    elif re.fullmatch(r"creationTimestamp\s+desc", order):
        items.sort(key=lambda r: r["creationTimestamp"], reverse=True)
    else:   # "Currently, only sorting by name or creationTimestamp desc is supported."
        raise invalid(f"Invalid value for field 'orderBy': '{order}'. Only 'name' and "
                      "'creationTimestamp desc' are supported.")
    size = p.get("maxResults", 500)
    if size > 500:   # "Acceptable values are 0 to 500, inclusive."
        raise invalid(f"Invalid value for field 'maxResults': '{size}'. Must be 0 to 500.")
    size = size or 500   # 0 read as the default (unverified what Google does with 0)
    key = fingerprint([scope, p.get("filter"), order])
    start = 0
    if p.get("pageToken"):
        try:
            tok = json.loads(base64.urlsafe_b64decode(p["pageToken"]))
            assert tok["k"] == key and isinstance(tok["o"], int)
            start = tok["o"]
        except Exception:
            raise invalid(f"Invalid value for field 'pageToken': '{p['pageToken']}'.")
    nxt = None
    if start + size < len(items):
        nxt = base64.urlsafe_b64encode(json.dumps({"o": start + size, "k": key}).encode()).decode()
    return items[start:start + size], nxt


# ---------------------------------------------------------------------------------------------
# The implemented methods: fn(state, project, params, body) -> (http status, JSON body)

IMPL = {}


def method(method_id):
    def register(fn):
        IMPL[method_id] = fn
        return fn
    return register


def need_zone(proj, zone):
    if zone not in ZONES:
        raise not_found(f"The resource 'projects/{proj.id}/zones/{zone}' was not found")


def get_instance(proj, p):
    need_zone(proj, p["zone"])
    inst = proj.instances.get((p["zone"], p["instance"]))
    if inst is None:
        raise not_found(f"The resource 'projects/{proj.id}/zones/{p['zone']}/instances/"
                        f"{p['instance']}' was not found")
    return inst


def replayed(proj, p):
    """The Operation an earlier request with this requestId started, if any. Called first by
    every mutating method, so a retry changes nothing."""
    rid = p.get("requestId")
    if rid is None:
        return None
    # "The request ID must be a valid UUID with the exception that zero UUID is not
    # supported" (requestId description).
    try:
        ok = uuid.UUID(rid).int != 0 and len(rid) == 36
    except ValueError:
        ok = False
    if not ok:
        raise invalid(f"Invalid value for field 'requestId': '{rid}'. Must be a non-zero UUID.")
    op = proj.request_ids.get(rid)
    return (200, op.res) if op else None


def start_op(st, proj, p, kind, target, zone=None, on_done=None, fault=None):
    """target: the resource the op modifies (its selfLink and id)."""
    op = Op(proj, kind, target["selfLink"], target["id"], zone, on_done, fault)
    proj.ops[op.name] = op
    if p.get("requestId") is not None:
        proj.request_ids[p["requestId"]] = op
    return 200, op.res


@method("compute.regions.get")
def regions_get(st, proj, p, body):
    r = p["region"]
    if r not in REGIONS:
        raise not_found(f"The resource 'projects/{proj.id}/regions/{r}' was not found")
    return 200, {"kind": "compute#region", "id": new_id(), "name": r, "description": r,
                 "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "status": "UP",
                 "zones": [zone_url(proj.id, z) for z in REGIONS[r]],
                 "selfLink": f"{BASE}projects/{proj.id}/regions/{r}", "supportsPzs": False}


@method("compute.zones.get")
def zones_get(st, proj, p, body):
    z = p["zone"]
    need_zone(proj, z)
    return 200, {"kind": "compute#zone", "id": new_id(), "name": z, "description": z,
                 "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "status": "UP",
                 "region": f"{BASE}projects/{proj.id}/regions/{ZONES[z]}",
                 "selfLink": zone_url(proj.id, z), "supportsPzs": False,
                 "availableCpuPlatforms": ["Intel Cascade Lake", "AMD Milan"]}


@method("compute.machineTypes.get")
def machine_types_get(st, proj, p, body):
    z, name = p["zone"], p["machineType"]
    need_zone(proj, z)
    shape = machine_shape(name)
    if shape is None:
        raise not_found(f"The resource 'projects/{proj.id}/zones/{z}/machineTypes/{name}' was "
                        "not found")
    return 200, {"kind": "compute#machineType", "id": new_id(), "name": name, "zone": z,
                 "description": f"{shape[0]} vCPUs, {shape[1] / 1024:g} GB RAM",
                 "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "guestCpus": shape[0],
                 "memoryMb": shape[1], "imageSpaceGb": 0, "maximumPersistentDisks": 128,
                 "maximumPersistentDisksSizeGb": "263168", "isSharedCpu": name in _SHARED,
                 "selfLink": f"{zone_url(proj.id, z)}/machineTypes/{name}"}


def image_resource(name):
    fam, arch = IMAGES[name]
    return {"kind": "compute#image", "id": str(int(fingerprint(name).encode().hex()[:15], 16)),
            "creationTimestamp": "2026-11-05T00:00:00.000-08:00", "name": name, "family": fam,
            "description": f"Debian, Debian GNU/Linux, 12 (bookworm), {arch.lower()} built on "
                           "20261105", "sourceType": "RAW", "status": "READY",
            "architecture": arch, "archiveSizeBytes": "1234567890", "diskSizeGb": "10",
            "licenses": [f"{BASE}projects/debian-cloud/global/licenses/debian-12-bookworm"],
            "guestOsFeatures": [{"type": "UEFI_COMPATIBLE"}, {"type": "VIRTIO_SCSI_MULTIQUEUE"},
                                {"type": "GVNIC"}],
            "storageLocations": ["eu", "asia", "us"], "labelFingerprint": fingerprint({}),
            "selfLink": f"{BASE}projects/debian-cloud/global/images/{name}"}


@method("compute.images.get")
def images_get(st, proj, p, body):
    return 200, image_resource(resolve_image(f"global/images/{p['image']}", "image", proj.id))


@method("compute.images.getFromFamily")
def images_get_from_family(st, proj, p, body):
    return 200, image_resource(resolve_image(f"global/images/family/{p['family']}", "family",
                                             proj.id))


@method("compute.networks.get")
def networks_get(st, proj, p, body):
    resolve_network(proj, f"global/networks/{p['network']}", "network")
    return 200, proj.network


@method("compute.instances.insert")
def instances_insert(st, proj, p, body):
    zone = p["zone"]
    need_zone(proj, zone)
    if (again := replayed(proj, p)):
        return again
    for q in ("sourceInstanceTemplate", "sourceMachineImage"):
        if q in p:
            raise ApiError(501, f"The GCE contract server does not implement {q}.",
                           "notImplemented")
    name = body["name"]
    res, want_nat = check_instance(proj, zone, body)
    if (zone, name) in proj.instances or ("instance", zone, name) in proj.pending:
        raise ApiError(409, f"The resource 'projects/{proj.id}/zones/{zone}/instances/{name}' "
                       "already exists", "alreadyExists")
    fault = take_fault(proj, zone)
    proj.pending.add(("instance", zone, name))

    def done():   # a faulted insert creates nothing: the instance then 404s
        proj.pending.discard(("instance", zone, name))
        if not fault:
            proj.instances[(zone, name)] = Instance(res, zone, want_nat)
    return start_op(st, proj, p, "insert", res, zone, done, fault)


def take_fault(proj, zone):
    """The Operation error fields of an injected fault matching this zone, or None."""
    for f in proj.faults:
        if f.get("zone", zone) == zone and f.get("region", ZONES[zone]) == ZONES[zone]:
            if f["count"] is not None:
                f["count"] -= 1
                if f["count"] <= 0:
                    proj.faults.remove(f)
            return fault_fields(proj, zone, f["code"])
    return None


def fault_fields(proj, zone, code):
    """Exactly as cloud-contracts.md A.3 describes the observed operation errors."""
    region = ZONES[zone]
    if code.startswith("ZONE_RESOURCE_POOL_EXHAUSTED"):
        err = {"code": code, "message": f"The zone 'projects/{proj.id}/zones/{zone}' does not "
               "have enough resources available to fulfill the request.  Try a different zone, "
               "or try again later.",
               "errorDetails": [{"help": {"links": [{
                   "description": "Troubleshooting documentation",
                   "url": "https://cloud.google.com/compute/docs/resource-error"}]}}]}
        return {"error": {"errors": [err]}, "httpErrorStatusCode": 503,
                "httpErrorMessage": "SERVICE UNAVAILABLE"}
    err = {"code": "QUOTA_EXCEEDED",
           "message": f"Quota 'CPUS' exceeded.  Limit: 8.0 in region {region}.",
           "errorDetails": [{"quotaInfo": {
               "metricName": "compute.googleapis.com/cpus", "limitName": "CPUS-per-project-region",
               "dimensions": {"region": region}, "limit": 8}}]}
    return {"error": {"errors": [err]}, "httpErrorStatusCode": 403,
            "httpErrorMessage": "FORBIDDEN"}


@method("compute.instances.get")
def instances_get(st, proj, p, body):
    inst = get_instance(proj, p)
    out = json.loads(json.dumps(inst.res))
    # Each get answers the current status, then moves the instance one step on.
    s = inst.res["status"]
    if s == "PROVISIONING":
        inst.res["status"] = "STAGING"
    elif s == "STAGING":
        st.became_running(proj, inst)
    elif s == "STOPPING" and not inst.deleting:   # guest poweroff
        inst.res["status"] = "TERMINATED"
        inst.res["lastStopTimestamp"] = now()
    return 200, out


@method("compute.instances.list")
def instances_list(st, proj, p, body):
    need_zone(proj, p["zone"])
    test = parse_filter(p.get("filter"), st.disc.schemas["Instance"]["properties"])
    items = [i.res for (z, _), i in proj.instances.items() if z == p["zone"] and test(i.res)]
    page, nxt = list_page(items, p, p["zone"])
    out = {"kind": "compute#instanceList", "id": f"projects/{proj.id}/zones/{p['zone']}/instances",
           "items": page, "selfLink": f"{zone_url(proj.id, p['zone'])}/instances"}
    if nxt:
        out["nextPageToken"] = nxt
    if not page:
        del out["items"]   # Google omits empty lists
    return 200, out


@method("compute.instances.aggregatedList")
def instances_aggregated_list(st, proj, p, body):
    """items has every zone this server knows (as Google lists every zone): zones without a
    matching instance on this page carry the NO_RESULTS_ON_PAGE warning."""
    test = parse_filter(p.get("filter"), st.disc.schemas["Instance"]["properties"])
    items = [i.res for i in proj.instances.values() if test(i.res)]
    page, nxt = list_page(items, p, "aggregated")
    scoped = {}
    for z in sorted(ZONES):
        mine = [r for r in page if r["zone"].endswith(f"/zones/{z}")]
        scope = f"zones/{z}"
        scoped[scope] = {"instances": mine} if mine else {"warning": {
            "code": "NO_RESULTS_ON_PAGE",
            "message": f"There are no results for scope '{scope}' on this page.",
            "data": [{"key": "scope", "value": scope}]}}
    out = {"kind": "compute#instanceAggregatedList", "id": f"projects/{proj.id}/aggregated/"
           "instances", "items": scoped, "selfLink": f"{BASE}projects/{proj.id}/aggregated/"
           "instances"}
    if nxt:
        out["nextPageToken"] = nxt
    return 200, out


@method("compute.instances.delete")
def instances_delete(st, proj, p, body):
    if (again := replayed(proj, p)):
        return again
    inst = get_instance(proj, p)
    if inst.res.get("deletionProtection"):
        raise invalid("Invalid resource usage: 'Resource cannot be deleted if it's protected "
                      "against deletion.'.")
    key = (p["zone"], p["instance"])
    inst.deleting = True
    inst.res["status"] = "STOPPING"

    def done():
        if proj.instances.get(key) is inst:
            del proj.instances[key]
            st.gone(proj, inst)
    return start_op(st, proj, p, "delete", inst.res, p["zone"], done)


@method("compute.instances.setLabels")
def instances_set_labels(st, proj, p, body):
    if (again := replayed(proj, p)):
        return again
    inst = get_instance(proj, p)
    labels = body.get("labels", {})
    check_labels(labels, "resource.labels")
    if body.get("labelFingerprint") != inst.res["labelFingerprint"]:
        raise ApiError(412, "Labels fingerprint either invalid or resource labels have changed",
                       "conditionNotMet")

    def done():
        if labels:
            inst.res["labels"] = labels
        else:
            inst.res.pop("labels", None)
        inst.res["labelFingerprint"] = fingerprint(labels)
    return start_op(st, proj, p, "setLabels", inst.res, p["zone"], done)


@method("compute.instances.setMetadata")
def instances_set_metadata(st, proj, p, body):
    if (again := replayed(proj, p)):
        return again
    inst = get_instance(proj, p)
    check_metadata(body, "resource")
    if body.get("fingerprint") != inst.res["metadata"]["fingerprint"]:
        raise ApiError(412, "Supplied fingerprint does not match current metadata fingerprint.",
                       "conditionNotMet")

    def done():
        inst.res["metadata"] = dict(body, kind="compute#metadata",
                                    fingerprint=fingerprint(body.get("items")))
    return start_op(st, proj, p, "setMetadata", inst.res, p["zone"], done)


def get_op(proj, p, zone):
    op = proj.ops.get(p["operation"])
    if op is None or op.zone != zone:
        where = f"zones/{zone}" if zone else "global"
        raise not_found(f"The resource 'projects/{proj.id}/{where}/operations/{p['operation']}' "
                        "was not found")
    return op


@method("compute.zoneOperations.get")
def zone_operations_get(st, proj, p, body):
    need_zone(proj, p["zone"])
    op = get_op(proj, p, p["zone"])
    op.advance()
    return 200, op.res


@method("compute.zoneOperations.wait")
def zone_operations_wait(st, proj, p, body):
    need_zone(proj, p["zone"])
    op = get_op(proj, p, p["zone"])
    op.advance(to_done=True)
    return 200, op.res


@method("compute.globalOperations.get")
def global_operations_get(st, proj, p, body):
    op = get_op(proj, p, None)
    op.advance()
    return 200, op.res


@method("compute.globalOperations.wait")
def global_operations_wait(st, proj, p, body):
    op = get_op(proj, p, None)
    op.advance(to_done=True)
    return 200, op.res


def get_firewall(proj, name):
    if name not in proj.firewalls:
        raise not_found(f"The resource 'projects/{proj.id}/global/firewalls/{name}' was not found")
    return proj.firewalls[name]


@method("compute.firewalls.insert")
def firewalls_insert(st, proj, p, body):
    if (again := replayed(proj, p)):
        return again
    fw = firewall_output(proj, body)
    name = fw["name"]
    if name in proj.firewalls or ("firewall", name) in proj.pending:
        raise ApiError(409, f"The resource 'projects/{proj.id}/global/firewalls/{name}' already "
                       "exists", "alreadyExists")
    proj.pending.add(("firewall", name))

    def done():
        proj.pending.discard(("firewall", name))
        proj.firewalls[name] = fw
    return start_op(st, proj, p, "insert", fw, None, done)


@method("compute.firewalls.get")
def firewalls_get(st, proj, p, body):
    return 200, get_firewall(proj, p["firewall"])


@method("compute.firewalls.list")
def firewalls_list(st, proj, p, body):
    test = parse_filter(p.get("filter"), st.disc.schemas["Firewall"]["properties"])
    page, nxt = list_page([f for f in proj.firewalls.values() if test(f)], p, "firewalls")
    out = {"kind": "compute#firewallList", "id": f"projects/{proj.id}/global/firewalls",
           "items": page, "selfLink": f"{BASE}projects/{proj.id}/global/firewalls"}
    if nxt:
        out["nextPageToken"] = nxt
    if not page:
        del out["items"]
    return 200, out


@method("compute.firewalls.patch")
def firewalls_patch(st, proj, p, body):
    """JSON-merge at the top level: given fields replace the stored ones. The document marks
    `name` required for compute.firewalls.patch (checked by discovery.py); renaming is refused."""
    if (again := replayed(proj, p)):
        return again
    old = get_firewall(proj, p["firewall"])
    if body["name"] != p["firewall"]:
        raise bad_field("resource.name", body["name"], "A firewall cannot be renamed.")
    keep = {k: v for k, v in old.items() if k not in (
        "kind", "selfLink", "id", "creationTimestamp")}
    fw = firewall_output(proj, dict(keep, **body), old)

    def done():
        proj.firewalls[p["firewall"]] = fw
    return start_op(st, proj, p, "patch", old, None, done)


@method("compute.firewalls.delete")
def firewalls_delete(st, proj, p, body):
    if (again := replayed(proj, p)):
        return again
    fw = get_firewall(proj, p["firewall"])

    def done():
        proj.firewalls.pop(p["firewall"], None)
    return start_op(st, proj, p, "delete", fw, None, done)


# ---------------------------------------------------------------------------------------------
# Test control (/_contract/...), scoped by project so parallel tests never interfere.

def control(st, verb, path, query, body):
    q = {k: v[0] for k, v in query.items()}
    if body is not None and not isinstance(body, dict):
        raise invalid("body must be a JSON object")
    body = body or {}
    pid = body.get("project") or q.get("project")
    if not pid:
        raise invalid("project is required")
    proj = st.project(pid)
    st.expire(proj)
    if verb == "POST" and path == "/_contract/faults":
        # {"project", "zone" | "region", "code", "count"?}: every matching insert (or the next
        # `count`) ends in an Operation error of that code; no instance is created.
        if body.get("code") not in FAULTS or ("zone" in body) == ("region" in body):
            raise invalid(f"need code in {FAULTS} and exactly one of zone, region")
        place = body.get("zone") or body.get("region")
        if place not in ZONES and place not in REGIONS:
            raise invalid(f"unknown zone or region {place}")
        count = body.get("count")
        if count is not None and (type(count) is not int or count < 1):
            raise invalid("count must be a positive integer (absent: until cleared)")
        fault = {k: body[k] for k in ("zone", "region") if k in body}
        fault.update(code=body["code"], count=count)
        proj.faults.append(fault)
        return 200, {"faults": proj.faults}
    if verb == "DELETE" and path == "/_contract/faults":
        proj.faults.clear()
        return 200, {"faults": []}
    if verb == "GET" and path == "/_contract/requests":
        return 200, proj.requests
    if verb == "GET" and path == "/_contract/state":
        return 200, {"instances": [i.res for i in proj.instances.values()],
                     "firewalls": list(proj.firewalls.values()),
                     "operations": [o.res for o in proj.ops.values()],
                     "faults": proj.faults,
                     "natIPsInUse": sorted(st.nat_used)}
    if verb == "POST" and path == "/_contract/guest-poweroff":
        # What `poweroff` inside the guest does on GCE: the instance stops (STOPPING, then
        # TERMINATED on the next get); it is not deleted. No halt hook: the guest did it.
        inst = get_instance(proj, {"zone": body.get("zone"), "instance": body.get("instance")})
        if inst.res["status"] != "RUNNING" or inst.deleting:
            raise invalid(f"instance is {inst.res['status']}, not RUNNING")
        inst.res["status"] = "STOPPING"
        st.gone(proj, inst, hook=False)
        return 200, inst.res
    raise not_found(f"no control endpoint {verb} {path}")


# ---------------------------------------------------------------------------------------------
# HTTP

def log(msg):
    print(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]} {msg}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gce-contract-server"
    st = None   # State, set in main()

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_PUT(self):
        self.handle_any("PUT")

    def log_message(self, *args):
        pass   # one line per request is written by handle_any

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        raw = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass   # trailers, up to the empty line
                return raw
            raw += self.rfile.read(size + 2)[:size]   # chunk data + CRLF

    def handle_any(self, verb):
        st = self.st
        url = urlsplit(self.path)
        raw = self.read_body()
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode("utf-8", "replace")   # logged as text; rejected below if needed
        headers, proj = {}, None
        with st.lock:
            try:
                if url.path.startswith("/_contract/"):
                    if isinstance(body, str):
                        raise invalid("body is not JSON")
                    status, out = control(st, verb, url.path, query, body)
                elif url.path.startswith(st.disc.prefix):
                    # Requests are logged per project: any id that the document's `project`
                    # pattern (the same in every method) accepts.
                    m = re.match(r"projects/([^/]+)", url.path[len(st.disc.prefix):])
                    if m and re.fullmatch(st.disc.methods["compute.instances.get"]["parameters"]
                                          ["project"]["pattern"], m.group(1)):
                        proj = st.project(m.group(1))
                        st.expire(proj)
                    status, out = self.api(verb, url.path[len(st.disc.prefix):], query, body,
                                           proj)
                else:
                    raise not_found(f"The requested URL {url.path} was not found on this server.")
            except ApiError as e:
                status, out, headers = e.code, e.envelope(), e.headers
            except Exception:   # a bug here: say so loudly rather than drop the connection
                log(traceback.format_exc())
                e = ApiError(500, "contract server bug (see its log)", "backendError")
                status, out = 500, e.envelope()
            if proj is not None:
                proj.requests.append({"method": verb, "path": url.path,
                                      "query": {k: v if len(v) > 1 else v[0]
                                                for k, v in query.items()},
                                      "body": body, "status": status})
            data = json.dumps(out, indent=1).encode()
        log(f"{verb} {self.path} -> {status}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def api(self, verb, rel, query, body, proj):
        disc = self.st.disc
        m, path_params = disc.route(verb, rel)
        auth = self.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:].strip()):
            msg = ("Request is missing required authentication credential. Expected OAuth 2 "
                   "access token, login cookie or other valid authentication credential. See "
                   "https://developers.google.com/identity/sign-in/web/devconsole-project.")
            raise ApiError(401, msg, "required", "UNAUTHENTICATED",
                           {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        fn = IMPL.get(m["id"])
        if fn is None:
            raise ApiError(501, f"The GCE contract server does not implement {m['id']}.",
                           "notImplemented")
        params = disc.check_params(m, path_params, query)
        if "request" in m:
            if isinstance(body, str):
                raise invalid("Invalid JSON payload received. Unexpected token.")
            body = disc.validate_body(m, body if body is not None else {})
        # (a body sent to a method without a request schema is ignored, as Google does)
        return fn(self.st, proj, params, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--discovery", required=True, help="path to compute.v1.json")
    ap.add_argument("--nat-pool", default="198.51.100.0/24",
                    help="CIDR the external (natIP) addresses are taken from")
    ap.add_argument("--boot-hook", help="CMD: run as `CMD boot FILE.json` when an instance "
                    "becomes RUNNING and `CMD halt PROJECT ZONE NAME` when it is deleted")
    a = ap.parse_args()
    disc = Discovery(a.discovery)
    Handler.st = State(disc, a.nat_pool, a.boot_hook)
    missing = [m for m in IMPL if m not in disc.methods]
    if missing:
        sys.exit(f"the discovery document lacks methods this server implements: {missing}")
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    log(f"GCE contract server on http://{a.host}:{srv.server_address[1]} "
        f"(discovery revision {disc.doc.get('revision')}, {len(disc.methods)} methods, "
        f"{len(IMPL)} implemented; boot hook {a.boot_hook or 'none'})")
    srv.serve_forever()


if __name__ == "__main__":
    main()
