"""A local contract server for the slice of Azure Resource Manager (ARM) that skyx's Azure agent
provider calls (a stand-in, not an emulator).

It is driven by Azure's own API description: the swagger (OpenAPI 2.0) files of
Azure/azure-rest-api-specs, vendored byte for byte under deploy/contracts/azure-specs/ (see its
SOURCE.md). Through openapi.py every request is routed by the files' path templates and its
parameters and JSON body are checked against the documented schemas ($ref across files, allOf,
required, types, formats, enums, readOnly dropped, unknown members refused). On top of that it
enforces what ARM and its resource providers are documented (or known) to enforce beyond the
schema: pinned api-versions, auth header, resource group existence, references between
resources, Azure's reserved admin user names, customData/userData limits, Spot-only fields,
NSG rule priorities and ports, subnet ranges, image and VM size tables, and it answers with the
documented shapes (the vendored examples: default NSG rules, ids, types, provisioningState).

Operations (all under /subscriptions/{subscriptionId}; api-version pinned per provider):
  Microsoft.Resources 2025-04-01  resourcegroups/{rg}: PUT GET DELETE; resourcegroups: GET
                                  ($filter=tagName eq 'K' [and tagValue eq 'V'], $top, nextLink)
  Microsoft.Network   2025-05-01  virtualNetworks PUT GET; networkSecurityGroups PUT GET;
                                  .../securityRules/{rule} PUT GET DELETE; publicIPAddresses and
                                  networkInterfaces PUT GET DELETE
  Microsoft.Compute   2025-04-01  virtualMachines/{vm} PUT GET DELETE (GET $expand=instanceView|
                                  userData), virtualMachines/{vm}/instanceView GET
Any other documented operation answers 501; undocumented paths 404 (InvalidResourceType under a
provider namespace). Wrong api-version: 400 InvalidApiVersionParameter (resource groups, as ARM
itself answers) or NoRegisteredProviderFound (provider resource types, as ARM's router answers);
missing: 400 MissingApiVersionParameter. No/invalid Authorization: 401 AuthenticationFailed
(missing or not "Bearer x") or InvalidAuthenticationToken (empty token). Subscription ids must be
GUIDs (400 InvalidSubscriptionId), as ARM requires.

Lifecycle (deterministic, driven by the client's polling, never by clocks): every PUT/DELETE
starts an operation that needs STEPS (2) observations to finish; an observation is a GET of its
Azure-AsyncOperation URL, of its Location URL, or of the resource itself. So a VM PUT answers
201 provisioningState Creating (network: Updating, as NRP's ProvisioningState has no Creating),
the first poll InProgress, the second Succeeded. Network PUTs answer Azure-AsyncOperation (+
Retry-After); compute PUT/DELETE answer Azure-AsyncOperation + Location (`...&monitor=true`) +
Retry-After; network DELETEs 202 + Location (operationResults) + Azure-AsyncOperation; resource
group DELETE 202 + Location (operationresults) + Retry-After, the group showing Deleting (PUTs
into it 409 ResourceGroupBeingDeleted) until the operation ends, then everything in it is gone
(halt hook for each VM). Location URLs answer 202 while running, then 200 (the resource for PUT,
empty for DELETE) or the failure's error. A Standard/Static public IP gets its address from
--public-ip-pool at creation (freed on delete); a NIC gets a private IP from its subnet (from
.4, Azure reserves the first four). When a VM reaches Succeeded the boot hook runs; deleting a
VM deletes the NICs it references with deleteOption Delete, their public IPs whose own
deleteOption is Delete, and its OS disk if its deleteOption is Delete (else the disk stays, as a
Microsoft.Compute/disks entry in /_contract/state).

Faults and test control, outside ARM's paths and scoped by subscription so parallel tests with
different subscription ids never interfere:
  POST   /_contract/faults  {"subscription","location","code","count"?,"zone"?,"vmSize"?}
         SkuNotAvailable: the VM PUT answers 409 SkuNotAvailable; QuotaExceeded: 409
         OperationNotAllowed (Total Regional Cores quota); AllocationFailed: PUT 201, the
         operation ends Failed (VM provisioningState Failed); ZonalAllocationFailed: the same,
         only for VMs with zones (optionally one "zone"). count: how many PUTs it hits (absent:
         until cleared).
  DELETE /_contract/faults?subscription=S
  GET    /_contract/requests?subscription=S   every ARM request of S: method, path, query, body,
         status
  GET    /_contract/state?subscription=S      resource groups with their resources by type,
         operations, faults, public IPs in use
  POST   /_contract/guest-poweroff {"subscription","resourceGroup","vm"}  what `poweroff` in the
         guest does on Azure: the VM stays, allocated (still billed), provisioningState
         Succeeded, power state stopped (instanceView PowerState/stopped); nothing is deleted
         and no hook runs (the guest did it).

What it does NOT do: no machine runs (unless --boot-hook CMD: `CMD boot FILE.json` when a VM
reaches Succeeded, FILE being the VM resource plus its osProfile.customData, which GET never
returns, plus top-level "skyxPublicIp" and "skyxPrivateIp" resolved from its primary NIC, in
the hook file only; `CMD halt SUB RG VM` when a deleted VM or resource group goes), no real auth (any non-empty Bearer token), no RBAC,
no quotas but injected ones, no PATCH, no VM power operations, no VM-created NICs
(networkInterfaceConfigurations: 501), only platform images from IMAGES, no persistence. Error
codes that are ARM's own and well known: AuthenticationFailed, InvalidAuthenticationToken,
MissingApiVersionParameter, InvalidApiVersionParameter, NoRegisteredProviderFound,
InvalidSubscriptionId, ResourceGroupNotFound, ResourceNotFound, ParentResourceNotFound,
ResourceGroupBeingDeleted, InvalidResourceGroupLocation, LocationRequired, InvalidRequestContent,
InvalidParameter, PlatformImageNotFound, SkuNotAvailable, OperationNotAllowed, AllocationFailed,
ZonalAllocationFailed, EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines, MaxPriceValueInvalid,
PropertyChangeNotAllowed, InvalidResourceReference, NicInUse, PublicIPAddressInUse,
InUseSubnetCannotBeDeleted; the network rule/subnet codes (SecurityRuleInvalidPriority,
SecurityRuleConflict, SecurityRuleInvalidPortRange, SecurityRuleInvalidAddressPrefix,
NetcfgSubnetRangeOutsideVnet, NetcfgSubnetRangesOverlap, PublicIPCountLimitReached) are recalled,
not confirmed from a source here (unverified). Python 3.11 standard library only.
"""
import argparse
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from openapi import ApiError, Spec, SpecMissing, decode_b64, required_error  # noqa: E402

C = "specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2025-04-01/"
N = "specification/network/resource-manager/Microsoft.Network/stable/2025-05-01/"
R = "specification/resources/resource-manager/Microsoft.Resources/resources/stable/2025-04-01/"
FILES = [R + "resources.json", C + "virtualMachine.json", N + "virtualNetwork.json",
         N + "networkSecurityGroup.json", N + "publicIpAddress.json", N + "networkInterface.json"]
API = {"Microsoft.Resources": "2025-04-01", "Microsoft.Compute": "2025-04-01",
       "Microsoft.Network": "2025-05-01"}
STEPS = 2   # observations an operation needs to finish
VM, VNET, NSG, PIP, NIC, DISK = ("Microsoft.Compute/virtualMachines",
                                 "Microsoft.Network/virtualNetworks",
                                 "Microsoft.Network/networkSecurityGroups",
                                 "Microsoft.Network/publicIPAddresses",
                                 "Microsoft.Network/networkInterfaces", "Microsoft.Compute/disks")
REGIONS = set("""eastus eastus2 westus westus2 westus3 centralus northcentralus southcentralus
    westcentralus canadacentral canadaeast brazilsouth northeurope westeurope uksouth ukwest
    francecentral germanywestcentral switzerlandnorth norwayeast swedencentral polandcentral
    italynorth spaincentral uaenorth qatarcentral southafricanorth centralindia southindia
    westindia eastasia southeastasia japaneast japanwest koreacentral koreasouth australiaeast
    australiasoutheast australiacentral israelcentral mexicocentral newzealandnorth""".split())
# VM sizes: vCPUs and architecture (general knowledge of Azure's size families, not the spec,
# whose vmSize enum is deprecated and lists none of the v5 sizes).
SIZES = {"Standard_B2s": (2, "x64"), "Standard_B2ms": (2, "x64"), "Standard_B4ms": (4, "x64"),
         "Standard_D1_v2": (1, "x64"), "Standard_D2_v2": (2, "x64")}
for _n in (2, 4, 8, 16, 32, 48, 64):
    for _fam in ("D{}s_v5", "D{}_v5", "D{}as_v5", "D{}ds_v5", "E{}s_v5", "D{}s_v6"):
        SIZES["Standard_" + _fam.format(_n)] = (_n, "x64")
for _n in (2, 4, 8, 16, 32, 48, 64):
    for _fam in ("D{}ps_v5", "D{}pls_v5", "D{}ps_v6"):
        SIZES["Standard_" + _fam.format(_n)] = (_n, "Arm64")
for _n in (2, 4, 8, 16, 32):
    SIZES[f"Standard_F{_n}s_v2"] = (_n, "x64")
# Platform images (publisher, offer, sku) -> architecture; case-insensitive like Azure.
IMAGES = {("debian", "debian-12", "12"): "x64", ("debian", "debian-12", "12-gen2"): "x64",
          ("debian", "debian-12", "12-arm64"): "Arm64",
          ("canonical", "ubuntu-24_04-lts", "server"): "x64",
          ("canonical", "ubuntu-24_04-lts", "server-arm64"): "Arm64"}
# OSProfile.adminUsername "Disallowed values" (computeRPCommon.json description).
RESERVED_USERS = set("""administrator admin user user1 test user2 test1 user3 admin1 1 123 a
    actuser adm admin2 aspnet backup console david guest john owner root server sql support
    support_388945a0 sys test2 test3 user4 user5""".split())
LOCATED = {"ResourceGroups_CreateOrUpdate", "VirtualMachines_CreateOrUpdate",
           "VirtualNetworks_CreateOrUpdate", "NetworkSecurityGroups_CreateOrUpdate",
           "PublicIPAddresses_CreateOrUpdate", "NetworkInterfaces_CreateOrUpdate"}
FAULTS = ("SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed", "QuotaExceeded")
GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
ALLOC_MSG = ("Allocation failed. We do not have sufficient capacity for the requested VM size in "
             "this {}. Read more about improving likelihood of allocation success at "
             "http://aka.ms/allocation-guidance")


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def err(status, code, message, target=None):
    return ApiError(status, code, message, target)


def bad(where, message):
    return err(400, "InvalidParameter", message, where)


def rid(sub, rg, rtype, name):
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{rtype}/{name}"


def parse_id(value):
    """ARM id -> (sub, rg, type 'NS/type', name, child-path) or None (case-insensitive)."""
    m = re.fullmatch(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/([^/]+)/([^/]+)/"
                     r"([^/]+)((?:/[^/]+/[^/]+)*)", value or "", re.IGNORECASE)
    return m and (m.group(1), m.group(2), f"{m.group(3)}/{m.group(4)}", m.group(5), m.group(6))


class Op:
    """An asynchronous operation: InProgress until observed STEPS times."""

    def __init__(self, sub, provider, location, verb, res=None, done=None, error=None,
                 fail=None):
        self.id, self.sub, self.provider, self.location = str(uuid.uuid4()), sub, provider, \
            location
        self.verb, self.res, self.done, self.error, self.fail = verb, res, done, error, fail
        self.status, self.polls, self.start, self.end = "InProgress", 0, now(), None
        sub.ops[self.id] = self

    def tick(self):
        if self.status != "InProgress":
            return
        self.polls += 1
        if self.polls >= STEPS:
            self.end = now()
            if self.error:
                self.status = "Failed"
                if self.fail:
                    self.fail()
            else:
                self.status = "Succeeded"
                if self.done:
                    self.done()
            if self.res is not None and self.res.op is self:
                self.res.op = None

    def urls(self, base):
        s, v = f"{base}/subscriptions/{self.sub.id}", API.get(self.provider, "2025-04-01")
        if self.provider == "Microsoft.Resources":
            loc = f"{s}/operationresults/{self.id}?api-version={v}"
            return None, loc
        if self.provider == "Microsoft.Compute":
            a = f"{s}/providers/Microsoft.Compute/locations/{self.location}/operations/{self.id}" \
                f"?api-version={v}"
            return a, a + "&monitor=true"
        a = f"{s}/providers/Microsoft.Network/locations/{self.location}/operations/{self.id}" \
            f"?api-version={v}"
        return a, a.replace("/operations/", "/operationResults/")

    def view(self):
        out = {"name": self.id, "status": self.status, "startTime": self.start}
        if self.provider == "Microsoft.Network":
            out = {"status": self.status}
        elif self.end:
            out["endTime"] = self.end
        if self.status in ("Failed", "Canceled"):
            out["error"] = dict(self.error)
        return out


class Res:
    def __init__(self, rtype, name, body, extra=None):
        self.type, self.name, self.body, self.extra = rtype, name, body, extra or {}
        self.op = None


class Group:
    def __init__(self, name, location, tags):
        self.name, self.location, self.tags = name, location, tags
        self.state, self.res = "Succeeded", {}

    def get(self, rtype, name):
        return self.res.get((rtype.lower(), name.lower()))

    def put(self, r):
        self.res[(r.type.lower(), r.name.lower())] = r

    def drop(self, r):
        self.res.pop((r.type.lower(), r.name.lower()), None)

    def of(self, rtype):
        return [r for (t, _), r in sorted(self.res.items()) if t == rtype.lower()]


class Sub:
    def __init__(self, sid):
        self.id, self.groups, self.ops, self.faults, self.requests = sid, {}, {}, [], []


class State:
    def __init__(self, spec, pool, boot_hook, retry_after, default_rules):
        self.spec, self.boot_hook, self.retry_after = spec, boot_hook, retry_after
        self.default_rules = default_rules
        self.lock = threading.RLock()
        self.subs = {}
        self.pool = [str(a) for a in ipaddress.ip_network(pool).hosts()]
        self.ips_used = set()
        self.hook_dir = tempfile.mkdtemp(prefix="arm-contract-") if boot_hook else None

    def sub(self, sid):
        if sid.lower() not in self.subs:
            self.subs[sid.lower()] = Sub(sid)
        return self.subs[sid.lower()]

    def hook(self, *args):
        if not self.boot_hook:
            return
        cmd = shlex.split(self.boot_hook) + [str(a) for a in args]
        log("boot hook: " + " ".join(cmd))
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
        threading.Thread(target=lambda: log(f"boot hook {args[0]} exited {p.wait()}"),
                         daemon=True).start()

    def take_ip(self):
        for a in self.pool:
            if a not in self.ips_used:
                self.ips_used.add(a)
                return a
        raise err(400, "PublicIPCountLimitReached", "Cannot create more than "
                  f"{len(self.pool)} public IP addresses for this subscription in this region.")


# ---------------------------------------------------------------------------------------------
# Helpers shared by the handlers

def group(sub, name, writing=False):
    g = sub.groups.get(name.lower())
    if g is None:
        raise err(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
    if writing and g.state == "Deleting":
        raise err(409, "ResourceGroupBeingDeleted", f"The resource group '{g.name}' is in "
                  "deprovisioning state and cannot perform this operation.")
    return g


def need(g, rtype, name):
    r = g.get(rtype, name)
    if r is None:
        raise err(404, "ResourceNotFound", f"The Resource '{rtype}/{name}' under resource group "
                  f"'{g.name}' was not found. For more details please go to "
                  "https://aka.ms/ARMResourceNotFoundFix")
    return r


def check_location(value, rtype):
    if not value:
        raise err(400, "LocationRequired", "The location property is required for this "
                  "definition.")
    loc = value.replace(" ", "").lower()
    if loc not in REGIONS:
        code, what = ("LocationNotAvailableForResourceGroup", "resource group") if rtype is None \
            else ("LocationNotAvailableForResourceType", f"resource type '{rtype}'")
        raise err(400, code, f"The provided location '{value}' is not available for {what}. "
                  f"List of available regions is '{','.join(sorted(REGIONS))}'.")
    return loc


def lookup(st, sub, ref, rtype, owner_id, location, field):
    """The resource an {id} reference names, in the store; InvalidResourceReference if it is
    not there or not in the owner's region (NRP's wording)."""
    p = parse_id(ref)
    r = None
    if p and p[0].lower() == sub.id.lower() and p[2].lower() == rtype.lower():
        g = sub.groups.get(p[1].lower())
        r = g and g.state != "Deleting" and g.get(rtype, p[3])
    if not r or (location and r.body.get("location") != location):
        raise err(400, "InvalidResourceReference", f"Resource {ref} referenced by resource "
                  f"{owner_id} was not found. Please make sure that the referenced resource "
                  "exists, and that both resources are in the same region.", field)
    return r, p


def etag():
    return f'W/"{uuid.uuid4()}"'


def start(st, sub, g, r, provider, verb, done=None, error=None, fail=None):
    op = Op(sub, provider, r.body.get("location") if r else g.location, verb, r, done, error,
            fail)
    if r is not None:
        r.op = op
    return op


def lro_headers(st, op, base, location=True, async_op=True):
    a, loc = op.urls(base)
    h = {"Retry-After": str(st.retry_after)}
    if async_op and a:
        h["Azure-AsyncOperation"] = a
    if location:
        h["Location"] = loc
    return h


def observe(r):
    """A GET of a resource counts as an observation of its running operation."""
    if r.op is not None:
        r.op.tick()


def copy(x):
    return json.loads(json.dumps(x))


IMPL = {}


def method(*ids):
    def register(fn):
        for i in ids:
            IMPL[i] = fn
        return fn
    return register


# ---------------------------------------------------------------------------------------------
# Resource groups (Microsoft.Resources)

def rg_view(sub, g):
    out = {"id": f"/subscriptions/{sub.id}/resourceGroups/{g.name}", "name": g.name,
           "type": "Microsoft.Resources/resourceGroups", "location": g.location,
           "properties": {"provisioningState": g.state}}
    if g.tags:
        out["tags"] = g.tags
    return out


@method("ResourceGroups_CreateOrUpdate")
def rg_put(st, sub, p, body, ctx):
    name = p["resourceGroupName"]
    if name.endswith("."):
        raise bad("resourceGroupName", "Resource group names cannot end with a period.")
    loc = check_location(body.get("location"), None)
    g = sub.groups.get(name.lower())
    if g is not None:
        group(sub, name, writing=True)
        if g.location != loc:
            raise err(409, "InvalidResourceGroupLocation", f"Invalid resource group location "
                      f"'{loc}'. The Resource group already exists in location '{g.location}'.")
        g.tags = body.get("tags", {})
        return 200, rg_view(sub, g), {}
    g = sub.groups[name.lower()] = Group(name, loc, body.get("tags", {}))
    return 201, rg_view(sub, g), {}


@method("ResourceGroups_Get")
def rg_get(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"])
    if g.state == "Deleting" and getattr(g, "op", None):
        g.op.tick()
        if sub.groups.get(g.name.lower()) is not g:
            group(sub, g.name)   # the observation finished the delete: 404 now
    return 200, rg_view(sub, g), {}


@method("ResourceGroups_List")
def rg_list(st, sub, p, body, ctx):
    f = (p.get("$filter") or "").strip()
    m = re.fullmatch(r"tagName eq '((?:[^']|'')*)'(?:\s+and\s+tagValue eq '((?:[^']|'')*)')?", f,
                     re.IGNORECASE)
    if f and not m:
        raise err(400, "InvalidFilterInQueryString", f"The $filter '{f}' is not supported. "
                  "Supported: tagName eq 'name' [and tagValue eq 'value'].")
    groups = sorted(sub.groups.values(), key=lambda g: g.name.lower())
    if m:
        k, v = m.group(1).replace("''", "'"), m.group(2)
        groups = [g for g in groups if any(t.lower() == k.lower() and
                                           (v is None or val == v.replace("''", "'"))
                                           for t, val in g.tags.items())]
    skip = int(ctx["query"].get("$skiptoken", ["0"])[-1] or 0)
    top = p.get("$top") or 100
    page = groups[skip:skip + top]
    out = {"value": [rg_view(sub, g) for g in page]}
    if skip + top < len(groups):
        q = f"api-version={API['Microsoft.Resources']}&$top={top}&$skiptoken={skip + top}"
        if f:
            q += "&$filter=" + f.replace(" ", "%20").replace("'", "%27")
        out["nextLink"] = f"{ctx['base']}/subscriptions/{sub.id}/resourcegroups?{q}"
    return 200, out, {}


@method("ResourceGroups_Delete")
def rg_delete(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"])
    ft = p.get("forceDeletionTypes")
    if ft and not set(ft.split(",")) <= {"Microsoft.Compute/virtualMachines",
                                         "Microsoft.Compute/virtualMachineScaleSets"}:
        raise bad("forceDeletionTypes", f"The value '{ft}' of forceDeletionTypes is not "
                  "supported.")
    if g.state != "Deleting":
        g.state = "Deleting"

        def done():
            mine = set(map(id, g.res.values()))
            for op in sub.ops.values():   # what was still running in the group ends with it
                if op.status == "InProgress" and op.res is not None and id(op.res) in mine:
                    op.status, op.end, op.done, op.fail = "Canceled", now(), None, None
                    op.error = {"code": "OperationCanceled", "message": "The operation was "
                                f"canceled: resource group '{g.name}' was deleted."}
            for r in g.of(VM):
                st.hook("halt", sub.id, g.name, r.name)
            for r in g.of(PIP):
                st.ips_used.discard(r.extra.get("ip"))
            sub.groups.pop(g.name.lower(), None)
        g.op = Op(sub, "Microsoft.Resources", g.location, "DELETE", None, done)
    return 202, None, lro_headers(st, g.op, ctx["base"], async_op=False)


# ---------------------------------------------------------------------------------------------
# Network (Microsoft.Network)

def net_base(sub, g, rtype, name, body, loc, r_old):
    out = {"name": name, "id": rid(sub.id, g.name, rtype, name), "type": rtype, "location": loc,
           "etag": etag()}
    if body.get("tags"):
        out["tags"] = body["tags"]
    return out


def net_put(st, sub, g, rtype, name, view, extra, ctx):
    """Stores (or replaces) a network resource in Updating and starts its operation."""
    old = g.get(rtype, name)
    if old is not None and old.op is not None and old.op.verb == "DELETE":
        raise err(409, "AnotherOperationInProgress", f"Another operation on this or dependent "
                  f"resource is in progress. Resource {view['id']} is being deleted.")
    r = Res(rtype, name, view, extra)
    if old is not None:
        r.extra = dict(old.extra, **extra)
    view["properties"]["provisioningState"] = "Updating"
    g.put(r)

    def done():
        view["properties"]["provisioningState"] = "Succeeded"
        for sub_res in view["properties"].get("securityRules", []) + \
                view["properties"].get("subnets", []):
            sub_res["properties"]["provisioningState"] = "Succeeded"
    op = start(st, sub, g, r, "Microsoft.Network", "PUT", done)
    return (200 if old else 201), copy(view), lro_headers(st, op, ctx["base"], location=False)


def net_delete(st, sub, g, r, ctx, done):
    r.body["properties"]["provisioningState"] = "Deleting"

    def gone():
        g.drop(r)
        done()
    op = start(st, sub, g, r, "Microsoft.Network", "DELETE", gone)
    return 202, None, lro_headers(st, op, ctx["base"])


_PORT = re.compile(r"\*|(\d{1,5})(?:-(\d{1,5}))?")


def check_rule(rule, where):
    pr = rule.get("properties") or {}
    if not rule.get("name"):
        raise required_error(f"{where}.name")
    if not 100 <= pr["priority"] <= 4096:
        raise err(400, "SecurityRuleInvalidPriority", f"Security rule {rule['name']} has invalid "
                  f"Priority. Value provided: {pr['priority']} Allowed range 100-4096.", where)
    for k, allowed in (("protocol", ("Tcp", "Udp", "Icmp", "Esp", "Ah", "*")),
                       ("access", ("Allow", "Deny")), ("direction", ("Inbound", "Outbound"))):
        if pr[k] not in allowed:
            raise bad(f"{where}.properties.{k}", f"Security rule {rule['name']} has invalid "
                      f"{k} '{pr[k]}'. Allowed values: {', '.join(allowed)}.")
    for one, many, kind in (("sourcePortRange", "sourcePortRanges", "port"),
                            ("destinationPortRange", "destinationPortRanges", "port"),
                            ("sourceAddressPrefix", "sourceAddressPrefixes", "address"),
                            ("destinationAddressPrefix", "destinationAddressPrefixes", "address")):
        values = ([pr[one]] if one in pr else []) + pr.get(many, [])
        if (one in pr) == bool(pr.get(many)):
            raise bad(f"{where}.properties.{one}", f"Security rule {rule['name']} must specify "
                      f"exactly one of {one} and {many}.")
        for v in values:
            if kind == "port":
                m = _PORT.fullmatch(v)
                if not m or (m.group(1) and not (int(m.group(1)) <= 65535 and
                                                 int(m.group(2) or m.group(1)) <= 65535 and
                                                 int(m.group(1)) <= int(m.group(2) or 65535))):
                    raise err(400, "SecurityRuleInvalidPortRange", "Security rule has invalid "
                              f"Port range. Value provided: {v}. Value should be an integer OR "
                              "integer range with '-' delimiter. Valid range 0-65535.", where)
            elif v not in ("*", "Internet", "VirtualNetwork", "AzureLoadBalancer"):
                try:
                    ipaddress.ip_network(v, strict=False)
                except ValueError:
                    raise err(400, "SecurityRuleInvalidAddressPrefix", "Security rule has "
                              f"invalid Address prefix. Value provided: {v}", where)
    if len(pr.get("description", "")) > 140:
        raise bad(f"{where}.properties.description", "Description is restricted to 140 chars.")


def rule_view(nsg_id, rule, kind="securityRules"):
    pr = dict(rule.get("properties") or {}, provisioningState="Updating")
    return {"name": rule["name"], "id": f"{nsg_id}/{kind}/{rule['name']}", "etag": etag(),
            "type": "Microsoft.Network/networkSecurityGroups/securityRules", "properties": pr}


def check_conflicts(rules):
    seen = {}
    for r in rules:
        key = (r["properties"]["priority"], r["properties"]["direction"])
        if key in seen:
            raise err(400, "SecurityRuleConflict", f"Rules '{seen[key]}' and '{r['name']}' have "
                      f"the same Priority '{key[0]}' and Direction '{key[1]}'.")
        seen[key] = r["name"]


@method("NetworkSecurityGroups_CreateOrUpdate")
def nsg_put(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    name = p["networkSecurityGroupName"]
    loc = check_location(body.get("location"), NSG)
    props = body.get("properties", {})
    for i, rule in enumerate(props.get("securityRules", [])):
        check_rule(rule, f"properties.securityRules[{i}]")
    view = net_base(sub, g, NSG, name, body, loc, None)
    old = g.get(NSG, name)
    if old and old.body["location"] != loc:
        raise err(400, "InvalidParameter", "Changing the location of a resource is not "
                  "allowed.", "location")
    view["properties"] = {
        "securityRules": [rule_view(view["id"], r) for r in props.get("securityRules", [])],
        "defaultSecurityRules": [dict(d, id=f"{view['id']}/defaultSecurityRules/{d['name']}")
                                 for d in copy(st.default_rules)],
        "resourceGuid": old.body["properties"]["resourceGuid"] if old else str(uuid.uuid4())}
    check_conflicts(view["properties"]["securityRules"])
    if props.get("flushConnection") is not None:
        view["properties"]["flushConnection"] = props["flushConnection"]
    return net_put(st, sub, g, NSG, name, view, {}, ctx)


@method("NetworkSecurityGroups_Get", "VirtualNetworks_Get", "PublicIPAddresses_Get",
        "NetworkInterfaces_Get")
def net_get(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"])
    rtype, key = {"NetworkSecurityGroups_Get": (NSG, "networkSecurityGroupName"),
                  "VirtualNetworks_Get": (VNET, "virtualNetworkName"),
                  "PublicIPAddresses_Get": (PIP, "publicIpAddressName"),
                  "NetworkInterfaces_Get": (NIC, "networkInterfaceName")}[ctx["op"]]
    r = need(g, rtype, p[key])
    observe(r)
    return 200, copy(need(g, rtype, p[key]).body), {}


def nsg_rules_op(st, sub, p, ctx):
    g = group(sub, p["resourceGroupName"], writing=ctx["verb"] != "GET")
    nsg = g.get(NSG, p["networkSecurityGroupName"])
    if nsg is None:
        raise err(404, "ParentResourceNotFound", "Can not perform requested operation on nested "
                  "resource. Parent resource '{}' not found.".format(p["networkSecurityGroupName"]))
    while nsg.op is not None and nsg.op.status == "InProgress" and ctx["verb"] != "GET":
        nsg.op.tick()   # a rule change waits for the group's own operation to end
    rules = nsg.body["properties"]["securityRules"]
    return g, nsg, rules, next((r for r in rules if r["name"].lower() ==
                                p["securityRuleName"].lower()), None)


@method("SecurityRules_CreateOrUpdate")
def rule_put(st, sub, p, body, ctx):
    g, nsg, rules, old = nsg_rules_op(st, sub, p, ctx)
    body = dict(body, name=p["securityRuleName"])
    check_rule(body, "securityRuleParameters")
    view = rule_view(nsg.body["id"], body)
    check_conflicts([r for r in rules if r is not old] + [view])
    if old:
        rules[rules.index(old)] = view
    else:
        rules.append(view)
    nsg.body["etag"] = etag()
    holder = Res("rule", view["name"], view)   # the operation reports on the rule

    def done():
        view["properties"]["provisioningState"] = "Succeeded"
    op = Op(sub, "Microsoft.Network", nsg.body["location"], "PUT", holder, done)
    holder.op = nsg.op = op
    return (200 if old else 201), copy(view), lro_headers(st, op, ctx["base"], location=False)


@method("SecurityRules_Get")
def rule_get(st, sub, p, body, ctx):
    g, nsg, rules, rule = nsg_rules_op(st, sub, p, ctx)
    observe(nsg)
    if rule is None:
        raise err(404, "NotFound", f"Resource {nsg.body['id']}/securityRules/"
                  f"{p['securityRuleName']} not found.")
    return 200, copy(rule), {}


@method("SecurityRules_Delete")
def rule_delete(st, sub, p, body, ctx):
    g, nsg, rules, rule = nsg_rules_op(st, sub, p, ctx)
    if rule is None:
        return 204, None, {}
    rule["properties"]["provisioningState"] = "Deleting"

    def done():
        if rule in rules:
            rules.remove(rule)
    op = Op(sub, "Microsoft.Network", nsg.body["location"], "DELETE", nsg, done)
    nsg.op = op
    return 202, None, lro_headers(st, op, ctx["base"])


@method("VirtualNetworks_CreateOrUpdate")
def vnet_put(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    name = p["virtualNetworkName"]
    loc = check_location(body.get("location"), VNET)
    props = body.get("properties", {})
    view = net_base(sub, g, VNET, name, body, loc, None)
    space = (props.get("addressSpace") or {}).get("addressPrefixes") or []
    if not space:
        raise required_error("properties.addressSpace.addressPrefixes")
    try:
        nets = [ipaddress.ip_network(a) for a in space]
    except ValueError as e:
        raise bad("properties.addressSpace.addressPrefixes", f"Invalid address prefix: {e}.")
    subnets, used = [], []
    for i, s in enumerate(props.get("subnets", [])):
        w = f"properties.subnets[{i}]"
        sp = s.get("properties") or {}
        if not s.get("name"):
            raise required_error(f"{w}.name")
        prefix = sp.get("addressPrefix") or (sp.get("addressPrefixes") or [None])[0]
        if not prefix:
            raise required_error(f"{w}.properties.addressPrefix")
        try:
            net = ipaddress.ip_network(prefix)
        except ValueError as e:
            raise bad(f"{w}.properties.addressPrefix", f"Invalid address prefix: {e}.")
        if not any(net.subnet_of(n) for n in nets if n.version == net.version):
            raise err(400, "NetcfgSubnetRangeOutsideVnet", f"Subnet '{s['name']}' is not valid "
                      "because its IP address range is outside the IP address range of virtual "
                      f"network '{name}'.", w)
        for other_name, other in used:
            if net.overlaps(other):
                raise err(400, "NetcfgSubnetRangesOverlap", f"Subnet '{s['name']}' is not valid "
                          f"in virtual network '{name}': its range overlaps subnet "
                          f"'{other_name}'.", w)
        used.append((s["name"], net))
        sv = {"name": s["name"], "id": f"{view['id']}/subnets/{s['name']}", "etag": etag(),
              "type": "Microsoft.Network/virtualNetworks/subnets",
              "properties": dict(sp, addressPrefix=str(net), provisioningState="Updating")}
        sv["properties"].pop("addressPrefixes", None)
        if sp.get("networkSecurityGroup"):
            ref = sp["networkSecurityGroup"].get("id")
            lookup(st, sub, ref, NSG, sv["id"], loc, f"{w}.properties.networkSecurityGroup")
            sv["properties"]["networkSecurityGroup"] = {"id": ref}
        subnets.append(sv)
    old = g.get(VNET, name)
    if old:
        keep = {s["name"].lower() for s in subnets}
        for s in old.body["properties"]["subnets"]:
            if s["name"].lower() not in keep and s["properties"].get("ipConfigurations"):
                raise err(400, "InUseSubnetCannotBeDeleted", f"Subnet {s['name']} is in use by "
                          f"{s['properties']['ipConfigurations'][0]['id']} and cannot be "
                          "deleted. In order to delete the subnet, delete all the resources "
                          "within the subnet.")
            for new in subnets:
                if new["name"].lower() == s["name"].lower():
                    new["properties"]["ipConfigurations"] = s["properties"].get(
                        "ipConfigurations", [])
                    if not new["properties"]["ipConfigurations"]:
                        del new["properties"]["ipConfigurations"]
    view["properties"] = {"addressSpace": {"addressPrefixes": [str(n) for n in nets]},
                          "subnets": subnets, "virtualNetworkPeerings": [],
                          "enableDdosProtection": bool(props.get("enableDdosProtection")),
                          "resourceGuid": old.body["properties"]["resourceGuid"] if old
                          else str(uuid.uuid4())}
    extra = {"next_ip": old.extra.get("next_ip", {}) if old else {}}
    return net_put(st, sub, g, VNET, name, view, extra, ctx)


@method("PublicIPAddresses_CreateOrUpdate")
def pip_put(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    name = p["publicIpAddressName"]
    loc = check_location(body.get("location"), PIP)
    props = body.get("properties", {})
    sku = (body.get("sku") or {}).get("name", "Basic")
    if sku not in ("Standard", "StandardV2"):
        raise bad("sku.name", f"Public IP SKU '{sku}' cannot be created: Basic SKU public IP "
                  "addresses were retired on 2025-09-30; use Standard (contract server).")
    if props.get("publicIPAllocationMethod", "Static") != "Static":
        raise bad("properties.publicIPAllocationMethod", f"Standard sku publicIp "
                  f"{rid(sub.id, g.name, PIP, name)} must have AllocationMethod set to Static.")
    if props.get("publicIPAddressVersion", "IPv4") != "IPv4":
        raise bad("properties.publicIPAddressVersion", "Only IPv4 public IP addresses are "
                  "supported by this contract server.")
    if props.get("publicIPPrefix") or props.get("natGateway") or props.get("ipAddress"):
        raise err(501, "NotImplementedByContractServer", "publicIPPrefix, natGateway and a "
                  "caller-chosen ipAddress are not implemented by this contract server.")
    old = g.get(PIP, name)
    view = net_base(sub, g, PIP, name, body, loc, old)
    ip = old.extra["ip"] if old else st.take_ip()
    view["sku"] = {"name": sku, "tier": (body.get("sku") or {}).get("tier", "Regional")}
    if body.get("zones"):
        view["zones"] = body["zones"]
    view["properties"] = {"publicIPAddressVersion": "IPv4", "publicIPAllocationMethod": "Static",
                          "idleTimeoutInMinutes": props.get("idleTimeoutInMinutes", 4),
                          "ipAddress": ip, "ipTags": props.get("ipTags", []),
                          "resourceGuid": old.body["properties"]["resourceGuid"] if old
                          else str(uuid.uuid4())}
    for k in ("dnsSettings", "deleteOption", "ddosSettings"):
        if k in props:
            view["properties"][k] = props[k]
    if old and "ipConfiguration" in old.body["properties"]:
        view["properties"]["ipConfiguration"] = old.body["properties"]["ipConfiguration"]
    return net_put(st, sub, g, PIP, name, view, {"ip": ip}, ctx)


@method("PublicIPAddresses_Delete")
def pip_delete(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    r = g.get(PIP, p["publicIpAddressName"])
    if r is None:
        return 204, None, {}
    if "ipConfiguration" in r.body["properties"]:
        raise err(400, "PublicIPAddressInUse", f"Public IP address {r.body['id']} can not be "
                  "deleted since it is still allocated to resource "
                  f"{r.body['properties']['ipConfiguration']['id']}.")
    return net_delete(st, sub, g, r, ctx, lambda: st.ips_used.discard(r.extra["ip"]))


@method("NetworkInterfaces_CreateOrUpdate")
def nic_put(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    name = p["networkInterfaceName"]
    loc = check_location(body.get("location"), NIC)
    props = body.get("properties", {})
    old = g.get(NIC, name)
    view = net_base(sub, g, NIC, name, body, loc, old)
    configs = props.get("ipConfigurations") or []
    if not configs:
        raise required_error("properties.ipConfigurations")
    out, links, pending = [], [], {}
    for i, c in enumerate(configs):
        w = f"properties.ipConfigurations[{i}]"
        cp = c.get("properties") or {}
        if not c.get("name"):
            raise required_error(f"{w}.name")
        cid = f"{view['id']}/ipConfigurations/{c['name']}"
        sref = (cp.get("subnet") or {}).get("id")
        if not sref:
            raise required_error(f"{w}.properties.subnet")
        m = re.fullmatch(r"(.*/virtualNetworks/[^/]+)/subnets/([^/]+)", sref, re.IGNORECASE)
        vnet, vp = lookup(st, sub, m.group(1) if m else sref, VNET, view["id"], loc,
                          f"{w}.properties.subnet")
        subnet = next((s for s in vnet.body["properties"]["subnets"]
                       if m and s["name"].lower() == m.group(2).lower()), None)
        if subnet is None:
            raise err(400, "InvalidResourceReference", f"Resource {sref} referenced by resource "
                      f"{view['id']} was not found. Please make sure that the referenced "
                      "resource exists, and that both resources are in the same region.", w)
        cv = {"name": c["name"], "id": cid, "etag": etag(),
              "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
              "properties": {"subnet": {"id": subnet["id"]}, "privateIPAddressVersion": "IPv4",
                             "privateIPAllocationMethod": cp.get("privateIPAllocationMethod",
                                                                 "Dynamic"),
                             "primary": cp.get("primary", i == 0),
                             "provisioningState": "Updating"}}
        oldc = old and next((x for x in old.body["properties"]["ipConfigurations"]
                             if x["name"] == c["name"]), None)
        if cp.get("privateIPAddress"):
            cv["properties"]["privateIPAddress"] = cp["privateIPAddress"]
        elif oldc:
            cv["properties"]["privateIPAddress"] = oldc["properties"]["privateIPAddress"]
        else:
            net = ipaddress.ip_network(subnet["properties"]["addressPrefix"])
            nxt = vnet.extra.setdefault("next_ip", {})
            k = subnet["name"].lower()
            n = pending.get((id(nxt), k), (nxt, k, nxt.get(k, 4)))[2]
            if n >= net.num_addresses - 1:
                raise err(400, "SubnetIsFull", f"Subnet {subnet['name']} with address prefix "
                          f"{net} does not have enough capacity for 1 IP addresses.")
            pending[(id(nxt), k)] = (nxt, k, n + 1)   # taken once every check passed
            cv["properties"]["privateIPAddress"] = str(net.network_address + n)
        pref = (cp.get("publicIPAddress") or {}).get("id")
        if pref:
            pip, _ = lookup(st, sub, pref, PIP, view["id"], loc, f"{w}.properties.publicIPAddress")
            used = pip.body["properties"].get("ipConfiguration", {}).get("id")
            if used and used.lower() != cid.lower():
                raise err(400, "PublicIPAddressInUse", f"Resource {pip.body['id']} is already "
                          f"in use by {used}.", w)
            cv["properties"]["publicIPAddress"] = {"id": pip.body["id"]}
            links.append(("pip", pip, cid))
        links.append(("subnet", subnet, cid))
        out.append(cv)
    view["properties"] = {"ipConfigurations": out, "dnsSettings": {"dnsServers": [],
                                                                   "appliedDnsServers": []},
                          "enableAcceleratedNetworking": bool(
                              props.get("enableAcceleratedNetworking")),
                          "enableIPForwarding": bool(props.get("enableIPForwarding")),
                          "disableTcpStateTracking": bool(props.get("disableTcpStateTracking")),
                          "vnetEncryptionSupported": False, "nicType": "Standard",
                          "resourceGuid": old.body["properties"]["resourceGuid"] if old
                          else str(uuid.uuid4())}
    nsg_ref = (props.get("networkSecurityGroup") or {}).get("id")
    if nsg_ref:
        nsg, _ = lookup(st, sub, nsg_ref, NSG, view["id"], loc, "properties.networkSecurityGroup")
        view["properties"]["networkSecurityGroup"] = {"id": nsg.body["id"]}
    if old:
        unlink_nic(old)
        for k in ("virtualMachine", "macAddress", "primary"):
            if k in old.body["properties"]:
                view["properties"][k] = old.body["properties"][k]
    for nxt, k, n in pending.values():
        nxt[k] = n
    for kind, target, cid in links:   # back references, as NRP shows them
        if kind == "pip":
            target.body["properties"]["ipConfiguration"] = {"id": cid}
        else:
            target["properties"].setdefault("ipConfigurations", []).append({"id": cid})
    return net_put(st, sub, g, NIC, name, view, {"links": links}, ctx)


def unlink_nic(nic):
    for kind, target, cid in nic.extra.get("links", []):
        if kind == "pip":
            target.body["properties"].pop("ipConfiguration", None)
        else:
            ics = target["properties"].get("ipConfigurations", [])
            ics[:] = [x for x in ics if x["id"] != cid]
            if not ics:
                target["properties"].pop("ipConfigurations", None)


@method("NetworkInterfaces_Delete")
def nic_delete(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    r = g.get(NIC, p["networkInterfaceName"])
    if r is None:
        return 204, None, {}
    vm = r.body["properties"].get("virtualMachine")
    if vm:
        raise err(400, "NicInUse", f"Network Interface {r.body['id']} is used by existing "
                  f"resource {vm['id']}. In order to delete the network interface, it must be "
                  "dissociated from the resource. To learn more, see aka.ms/deletenic.")
    return net_delete(st, sub, g, r, ctx, lambda: unlink_nic(r))


# ---------------------------------------------------------------------------------------------
# Virtual machines (Microsoft.Compute)

def vm_semantics(st, sub, g, name, body):
    """What CRP checks beyond the schema; returns (location, size, NIC resources, arch)."""
    loc = check_location(body.get("location"), VM)
    props = body.get("properties") or {}
    vid = rid(sub.id, g.name, VM, name)
    size = (props.get("hardwareProfile") or {}).get("vmSize")
    if not size:
        raise required_error("properties.hardwareProfile.vmSize")
    if size not in SIZES:
        raise bad("properties.hardwareProfile.vmSize", f"The value {size} provided for the VM "
                  "size is not valid. The valid values are: " + ", ".join(sorted(SIZES)) + ".")
    zones = body.get("zones") or []
    if len(zones) > 1 or any(z not in ("1", "2", "3") for z in zones):
        raise bad("zones", f"The zones {zones} are not valid: give at most one of '1', '2', '3'.")
    sp = props.get("storageProfile") or {}
    ref = sp.get("imageReference")
    if not ref:
        raise required_error("properties.storageProfile.imageReference")
    if any(k in ref for k in ("id", "sharedGalleryImageId", "communityGalleryImageId")):
        raise err(501, "NotImplementedByContractServer", "Only platform images "
                  "(publisher/offer/sku/version) are implemented by this contract server.")
    key = tuple((ref.get(k) or "").lower() for k in ("publisher", "offer", "sku"))
    version = ref.get("version") or ""
    arch = IMAGES.get(key)
    if arch is None or not re.fullmatch(r"latest|\d+\.\d+\.\d+", version):
        urn = ":".join(ref.get(k, "") for k in ("publisher", "offer", "sku", "version"))
        raise err(404, "PlatformImageNotFound", f"The platform image '{urn}' is not available. "
                  "Verify that all fields in the storage profile are correct. For more details "
                  "about storage profile information, please refer to "
                  "https://aka.ms/storageprofile", "imageReference")
    if arch != SIZES[size][1]:
        raise bad("properties.hardwareProfile.vmSize", f"The selected VM size '{size}' cannot "
                  f"boot an image of architecture '{arch}'.")
    od = sp.get("osDisk") or {}
    if od and od.get("createOption") != "FromImage":
        raise bad("properties.storageProfile.osDisk.createOption", "Only createOption FromImage "
                  "is supported (with an imageReference).")
    for k, allowed in (("deleteOption", ("Delete", "Detach")),
                       ("caching", ("None", "ReadOnly", "ReadWrite"))):
        if k in od and od[k] not in allowed:
            raise bad(f"properties.storageProfile.osDisk.{k}", f"The value '{od[k]}' of {k} is "
                      f"not valid. Allowed: {', '.join(allowed)}.")
    sat = (od.get("managedDisk") or {}).get("storageAccountType")
    if sat and sat not in ("Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "Premium_ZRS",
                           "StandardSSD_ZRS"):
        raise bad("properties.storageProfile.osDisk.managedDisk.storageAccountType",
                  f"Storage account type '{sat}' is not supported for an OS disk.")
    if sp.get("dataDisks"):
        raise err(501, "NotImplementedByContractServer", "dataDisks are not implemented by this "
                  "contract server.")
    check_os_profile(props.get("osProfile"))
    if props.get("userData") is not None:
        data = decode_b64(props["userData"])
        if data is None or len(data) > 65536:
            raise bad("properties.userData", "User data must be base64 encoded and at most 64 "
                      "KB once decoded.")
    prio = props.get("priority", "Regular")
    if prio not in ("Regular", "Low", "Spot"):
        raise bad("properties.priority", f"The value '{prio}' of priority is not valid. "
                  "Allowed: Regular, Low, Spot.")
    spot = prio in ("Low", "Spot")
    if props.get("evictionPolicy") is not None:
        if not spot:
            raise err(400, "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines", "Eviction "
                      "policy can be set only on Azure Spot Virtual Machines.",
                      "evictionPolicy")
        if props["evictionPolicy"] not in ("Deallocate", "Delete"):
            raise bad("properties.evictionPolicy", "Eviction policy must be Deallocate or "
                      "Delete.")
    price = (props.get("billingProfile") or {}).get("maxPrice")
    if price is not None:
        if not spot:
            raise bad("properties.billingProfile.maxPrice", "Max price can be set only on Azure "
                      "Spot Virtual Machines.")
        if price != -1 and price <= 0:
            raise err(400, "MaxPriceValueInvalid", f"The maxPrice value {price} is invalid: it "
                      "must be -1 or greater than zero.", "billingProfile.maxPrice")
    ident = body.get("identity") or {}
    uai = ident.get("userAssignedIdentities") or {}
    if "UserAssigned" in ident.get("type", "") and not uai:
        raise bad("identity.userAssignedIdentities", "userAssignedIdentities must be given when "
                  "the identity type is UserAssigned.")
    if uai and "UserAssigned" not in ident.get("type", ""):
        raise bad("identity.type", "userAssignedIdentities can be given only when the identity "
                  "type includes UserAssigned.")
    for k in uai:
        p = parse_id(k)
        if not p or p[2].lower() != "microsoft.managedidentity/userassignedidentities" or p[4]:
            raise bad("identity.userAssignedIdentities", f"The user assigned identity id '{k}' "
                      "is not a valid resource id.")
    net = props.get("networkProfile") or {}
    if net.get("networkInterfaceConfigurations"):
        raise err(501, "NotImplementedByContractServer", "networkInterfaceConfigurations (NICs "
                  "created by the VM) are not implemented by this contract server.")
    refs = net.get("networkInterfaces") or []
    if not refs:
        raise required_error("properties.networkProfile.networkInterfaces")
    nics = []
    for i, n in enumerate(refs):
        w = f"properties.networkProfile.networkInterfaces[{i}]"
        try:
            nic, _ = lookup(st, sub, n.get("id"), NIC, vid, None, w)
        except ApiError:
            raise bad(w + ".id", f"Network interface '{n.get('id')}' was not found.")
        if nic.body["location"] != loc:
            raise bad(w + ".id", f"The network interface {nic.body['id']} is in location "
                      f"'{nic.body['location']}', not in the VM's location '{loc}'.")
        used = nic.body["properties"].get("virtualMachine", {}).get("id")
        if used and used.lower() != vid.lower():
            raise bad(w + ".id", f"Network interface {nic.body['id']} is attached to VM {used}.")
        dop = (n.get("properties") or {}).get("deleteOption", "Detach")
        if dop not in ("Delete", "Detach"):
            raise bad(w + ".properties.deleteOption", "deleteOption must be Delete or Detach.")
        nics.append((nic, dop, (n.get("properties") or {}).get("primary")))
    if len(nics) > 1 and sum(1 for _, _, pr in nics if pr) != 1:
        raise bad("properties.networkProfile.networkInterfaces", "Virtual machine must have "
                  "exactly one primary network interface when it has more than one.")
    return loc, size, nics, arch


def check_os_profile(osp):
    if not osp:
        raise required_error("properties.osProfile")
    w = "properties.osProfile"
    if not osp.get("computerName"):
        raise required_error(f"{w}.computerName")
    if len(osp["computerName"]) > 64 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*",
                                                         osp["computerName"]):
        raise bad(f"{w}.computerName", "Linux host name cannot exceed 64 characters in length "
                  "or contain the following characters: ` ~ ! @ # $ % ^ & * ( ) = + _ [ ] { } "
                  "\\ | ; : ' \" , < > / ?.")
    user = osp.get("adminUsername")
    if not user:
        raise required_error(f"{w}.adminUsername")
    if user.lower() in RESERVED_USERS:
        raise bad(f"{w}.adminUsername", "The Admin Username specified is not allowed.")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", user):
        raise bad(f"{w}.adminUsername", "Linux admin user name must start with a letter or "
                  "underscore and contain only letters, digits, '_', '.' and '-' (1-64).")
    if osp.get("windowsConfiguration"):
        raise bad(f"{w}.windowsConfiguration", "windowsConfiguration is not valid for a Linux "
                  "image.")
    lc = osp.get("linuxConfiguration") or {}
    keys = (lc.get("ssh") or {}).get("publicKeys") or []
    if lc.get("disablePasswordAuthentication") and not keys or \
            not lc.get("disablePasswordAuthentication") and not osp.get("adminPassword"):
        raise bad(f"{w}.linuxConfiguration", "Authentication using either SSH or by user name "
                  "and password must be enabled in Linux profile.")
    for i, k in enumerate(keys):
        if k.get("path") != f"/home/{user}/.ssh/authorized_keys":
            raise bad(f"{w}.linuxConfiguration.ssh.publicKeys[{i}].path", "The value of "
                      "parameter linuxConfiguration.ssh.publicKeys.path is invalid: it must be "
                      f"/home/{user}/.ssh/authorized_keys.")
        if not re.match(r"(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+",
                        k.get("keyData") or ""):
            raise bad(f"{w}.linuxConfiguration.ssh.publicKeys[{i}].keyData", "The value of "
                      "parameter linuxConfiguration.ssh.publicKeys.keyData is invalid.")
    cd = osp.get("customData")
    if cd is not None and (len(cd) > 87380 or decode_b64(cd) is None or
                           len(decode_b64(cd)) > 65535):
        raise bad(f"{w}.customData", "Custom data in OSProfile must be in Base64 encoding and "
                  "with a maximum length of 87380 characters.")


def take_fault(sub, loc, zones, size):
    for f in sub.faults:
        if f["location"] != loc or f.get("vmSize", size) != size:
            continue
        if f["code"] == "ZonalAllocationFailed" and (not zones or f.get("zone", zones[0]) !=
                                                     zones[0]):
            continue
        if f.get("zone") and f["code"] != "ZonalAllocationFailed" and f["zone"] not in zones:
            continue
        if f["count"] is not None:
            f["count"] -= 1
            if f["count"] <= 0:
                sub.faults.remove(f)
        return f["code"]
    return None


def vm_view(sub, g, name, body, loc, size, nics, old):
    props = body.get("properties") or {}
    sp, osp = props["storageProfile"], props["osProfile"]
    od = sp.get("osDisk") or {}
    vid = rid(sub.id, g.name, VM, name)
    disk = od.get("name") or f"{name}_OsDisk_1_{uuid.uuid4().hex}"
    out = {"name": name, "id": vid, "type": VM, "location": loc,
           "etag": f'"{int(old.body["etag"].strip(chr(34))) + 1 if old else 1}"'}
    for k in ("tags", "zones"):
        if body.get(k):
            out[k] = body[k]
    ident = body.get("identity")
    if ident and ident.get("type") != "None":
        iv = {"type": ident["type"]}
        if "SystemAssigned" in ident["type"]:
            iv.update(principalId=str(uuid.uuid4()), tenantId=str(uuid.uuid4()))
        if ident.get("userAssignedIdentities"):
            iv["userAssignedIdentities"] = {k: {"principalId": str(uuid.uuid4()),
                                                "clientId": str(uuid.uuid4())}
                                            for k in ident["userAssignedIdentities"]}
        out["identity"] = iv
    lc = copy(osp.get("linuxConfiguration") or {})
    lc.setdefault("disablePasswordAuthentication", False)
    lc.setdefault("provisionVMAgent", True)
    lc.setdefault("patchSettings", {"patchMode": "ImageDefault", "assessmentMode": "ImageDefault"})
    p = {"hardwareProfile": {"vmSize": size},
         "storageProfile": {"imageReference": dict(sp["imageReference"]),
                            "osDisk": {"osType": "Linux", "name": disk,
                                       "createOption": "FromImage",
                                       "caching": od.get("caching", "ReadWrite"),
                                       "managedDisk": {"storageAccountType": (
                                           od.get("managedDisk") or {}).get(
                                           "storageAccountType", "Premium_LRS"),
                                           "id": rid(sub.id, g.name, DISK, disk)},
                                       "deleteOption": od.get("deleteOption", "Detach"),
                                       "diskSizeGB": od.get("diskSizeGB", 30)},
                            "dataDisks": []},
         "osProfile": {"computerName": osp["computerName"], "adminUsername":
                       osp["adminUsername"], "linuxConfiguration": lc, "secrets": [],
                       "allowExtensionOperations": True, "requireGuestProvisionSignal": True},
         "networkProfile": {"networkInterfaces": [
             {"id": n.body["id"], "properties": {"deleteOption": d, **(
                 {"primary": pr} if pr is not None else {})}} for n, d, pr in nics]},
         "provisioningState": "Updating" if old else "Creating",
         "vmId": old.body["properties"]["vmId"] if old else str(uuid.uuid4()),
         "timeCreated": old.body["properties"]["timeCreated"] if old else now()}
    for k in ("priority", "evictionPolicy", "billingProfile", "diagnosticsProfile",
              "securityProfile", "additionalCapabilities", "scheduledEventsProfile",
              "licenseType"):
        if k in props:
            p[k] = props[k]
    if p.get("priority") in ("Spot", "Low"):
        p.setdefault("evictionPolicy", "Deallocate")
        p.setdefault("billingProfile", {"maxPrice": -1})
    out["properties"] = p
    return out


def vm_put(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    name = p["vmName"]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}[A-Za-z0-9_]|[A-Za-z0-9]", name):
        raise bad("vmName", f"The resource name '{name}' is invalid: Linux VM names are 1-64 "
                  "letters, digits, '.', '_' and '-', not ending in '.' or '-'.")
    old = g.get(VM, name)
    if old is not None and old.op is not None:
        raise err(409, "OperationNotAllowed", f"Operation on VM '{name}' is not allowed since "
                  "another operation is in progress on it.")
    loc, size, nics, arch = vm_semantics(st, sub, g, name, body)
    osp = body["properties"]["osProfile"]
    if old is not None:
        was = old.extra
        for k, a, b in (("location", old.body["location"], loc),
                        ("osProfile.customData", was.get("customData"), osp.get("customData")),
                        ("osProfile.adminUsername", old.body["properties"]["osProfile"][
                            "adminUsername"], osp["adminUsername"]),
                        ("storageProfile.imageReference", old.body["properties"][
                            "storageProfile"]["imageReference"], body["properties"][
                            "storageProfile"]["imageReference"])):
            if a != b:
                raise err(409, "PropertyChangeNotAllowed", f"Changing property '{k}' is not "
                          "allowed.", k)
    fault = take_fault(sub, loc, body.get("zones") or [], size)
    vid = rid(sub.id, g.name, VM, name)
    if fault == "SkuNotAvailable":
        z = f" zones '{','.join(body['zones'])}'" if body.get("zones") else ""
        raise err(409, "SkuNotAvailable", f"The requested size for resource '{vid}' is currently "
                  f"not available in location '{loc}'{z} for subscription '{sub.id}'. Please try "
                  "another size or deploy to a different location or zones. See "
                  "https://aka.ms/azureskunotavailable for details.")
    if fault == "QuotaExceeded":
        n = SIZES[size][0]
        raise err(409, "OperationNotAllowed", "Operation could not be completed as it results "
                  "in exceeding approved Total Regional Cores quota. Additional details - "
                  f"Deployment Model: Resource Manager, Location: {loc}, Current Limit: {n}, "
                  f"Current Usage: {n}, Additional Required: {n}, (Minimum) New Limit Required: "
                  f"{2 * n}. Submit a request for Quota increase at https://aka.ms/"
                  "ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView by "
                  "specifying parameters listed in the 'Details' section for deployment to "
                  "succeed. Please read more about quota limits at https://docs.microsoft.com/"
                  "en-us/azure/azure-supportability/regional-quota-requests.")
    view = vm_view(sub, g, name, body, loc, size, nics, old)
    extra = dict(old.extra) if old else {}
    extra.update(customData=osp.get("customData"), nics=[(n, d) for n, d, _ in nics],
                 arch=arch, power=extra.get("power"))
    if "userData" in body["properties"]:
        extra["userData"] = body["properties"]["userData"]
    r = Res(VM, name, view, extra)
    g.put(r)
    if old:
        for n, _ in old.extra.get("nics", []):
            n.body["properties"].pop("virtualMachine", None)
    for i, (n, _, pr) in enumerate(nics):
        n.body["properties"]["virtualMachine"] = {"id": vid}
        n.body["properties"]["primary"] = pr if pr is not None else i == 0
    error = fault and {"code": fault, "message": ALLOC_MSG.format(
        "zone" if fault == "ZonalAllocationFailed" else "region")}

    def done():
        view["properties"]["provisioningState"] = "Succeeded"
        view["properties"]["storageProfile"]["imageReference"]["exactVersion"] = "0.20261101.1"
        for n, _, _ in nics:
            n.body["properties"].setdefault("macAddress", "00-0D-3A-" + "-".join(
                uuid.uuid4().hex[i:i + 2].upper() for i in (0, 2, 4)))
        if r.extra.get("power") != "stopped":
            r.extra["power"] = "running"
        if not old:
            path = os.path.join(st.hook_dir, f"{sub.id}.{g.name}.{name}.json") if st.hook_dir \
                else None
            if path:
                with open(path, "w") as f:
                    json.dump(hook_view(st, sub, g, r), f, indent=1)
                st.hook("boot", path)

    def failed():
        view["properties"]["provisioningState"] = "Failed"
    op = start(st, sub, g, r, "Microsoft.Compute", "PUT", done, error, failed)
    return (200 if old else 201), copy(view), lro_headers(st, op, ctx["base"])


def hook_view(st, sub, g, r):
    """The VM resource plus what GET never shows: customData, and its public address."""
    out = copy(r.body)
    if r.extra.get("customData") is not None:
        out["properties"]["osProfile"]["customData"] = r.extra["customData"]
    for n, _ in r.extra.get("nics", []):
        if not n.body["properties"].get("primary"):
            continue
        for c in n.body["properties"]["ipConfigurations"]:
            if c["properties"].get("privateIPAddress"):
                out["skyxPrivateIp"] = c["properties"]["privateIPAddress"]
            pref = c["properties"].get("publicIPAddress")
            p = pref and parse_id(pref["id"])
            pg = p and sub.groups.get(p[1].lower())
            pip = pg and pg.get(PIP, p[3])
            if pip:
                out["skyxPublicIp"] = pip.extra["ip"]
                return out
    return out


def instance_view(r):
    ps = r.body["properties"]["provisioningState"]
    statuses = [{"code": f"ProvisioningState/{ps.lower()}", "level": "Info" if ps != "Failed"
                 else "Error", "displayStatus": f"Provisioning {ps.lower()}", "time": now()}]
    power = r.extra.get("power")
    if power:
        statuses.append({"code": f"PowerState/{power}", "level": "Info",
                         "displayStatus": f"VM {power}"})
    return {"computerName": r.body["properties"]["osProfile"]["computerName"],
            "osName": "debian", "hyperVGeneration": "V2", "statuses": statuses}


@method("VirtualMachines_CreateOrUpdate")
def vm_put_op(st, sub, p, body, ctx):
    return vm_put(st, sub, p, body, ctx)


@method("VirtualMachines_Get", "VirtualMachines_InstanceView")
def vm_get(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"])
    r = need(g, VM, p["vmName"])
    observe(r)
    r = need(g, VM, p["vmName"])
    iv = instance_view(r)
    if ctx["op"] == "VirtualMachines_InstanceView":
        return 200, iv, {}
    out = copy(r.body)
    if p.get("$expand") == "instanceView":
        out["properties"]["instanceView"] = iv
    elif p.get("$expand") == "userData" and "userData" in r.extra:
        out["properties"]["userData"] = r.extra["userData"]
    return 200, out, {}


@method("VirtualMachines_Delete")
def vm_delete(st, sub, p, body, ctx):
    g = group(sub, p["resourceGroupName"], writing=True)
    r = g.get(VM, p["vmName"])
    if r is None:
        return 204, None, {}
    if r.op is not None and r.op.verb == "DELETE":
        return 202, None, lro_headers(st, r.op, ctx["base"])
    r.body["properties"]["provisioningState"] = "Deleting"

    def done():
        g.drop(r)
        st.hook("halt", sub.id, g.name, r.name)
        for nic, dop in r.extra.get("nics", []):
            nic.body["properties"].pop("virtualMachine", None)
            if dop != "Delete" or g.get(NIC, nic.name) is not nic:
                continue
            unlink_nic(nic)
            g.drop(nic)
            for kind, target, _ in nic.extra.get("links", []):
                if kind == "pip" and target.body["properties"].get("deleteOption") == "Delete":
                    g.drop(target)
                    st.ips_used.discard(target.extra["ip"])
        od = r.body["properties"]["storageProfile"]["osDisk"]
        if od.get("deleteOption") != "Delete":
            g.put(Res(DISK, od["name"], {"id": od["managedDisk"]["id"], "name": od["name"],
                                         "type": DISK, "location": r.body["location"]}))
    op = start(st, sub, g, r, "Microsoft.Compute", "DELETE", done)
    return 202, None, lro_headers(st, op, ctx["base"])


# ---------------------------------------------------------------------------------------------
# Operation status URLs (not in the specs: ARM's generic async-operation protocol)

STATUS = re.compile(r"/subscriptions/([^/]+)/(?:providers/(Microsoft\.Compute|Microsoft\.Network)"
                    r"/locations/([^/]+)/(operations|operationResults)|(operationresults))/"
                    r"([^/?]+)", re.IGNORECASE)


def op_status(st, sub, m, query, ctx):
    op = sub.ops.get(m.group(6))
    if op is None:
        raise err(404, "NotFound", f"The operation '{m.group(6)}' was not found.")
    op.tick()
    location_style = m.group(5) or m.group(4) == "operationResults" or \
        query.get("monitor", [""])[-1] == "true"
    if not location_style:
        return 200, op.view(), {}
    if op.status == "InProgress":
        h = lro_headers(st, op, ctx["base"], async_op=False)
        return 202, None, h
    if op.status in ("Failed", "Canceled"):
        raise err(409 if op.error["code"] in FAULTS else 500, op.error["code"],
                  op.error["message"])
    if op.verb == "PUT" and op.res is not None and op.res.type != "rule":
        return 200, copy(op.res.body), {}
    return 200, None, {}


# ---------------------------------------------------------------------------------------------
# Test control (/_contract/...), scoped by subscription

def control(st, verb, path, query, body):
    q = {k: v[-1] for k, v in query.items()}
    body = body or {}
    if not isinstance(body, dict):
        raise err(400, "InvalidRequestContent", "body must be a JSON object")
    sid = body.get("subscription") or q.get("subscription")
    if not sid:
        raise err(400, "InvalidParameter", "subscription is required")
    sub = st.sub(sid)
    if verb == "POST" and path == "/_contract/faults":
        if body.get("code") not in FAULTS:
            raise err(400, "InvalidParameter", f"code must be one of {FAULTS}")
        loc = check_location(body.get("location"), VM)
        count = body.get("count")
        if count is not None and (type(count) is not int or count < 1):
            raise err(400, "InvalidParameter", "count must be a positive integer (absent: until "
                      "cleared)")
        f = {"location": loc, "code": body["code"], "count": count}
        for k in ("zone", "vmSize"):
            if body.get(k):
                f[k] = str(body[k])
        sub.faults.append(f)
        return 200, {"faults": sub.faults}
    if verb == "DELETE" and path == "/_contract/faults":
        sub.faults.clear()
        return 200, {"faults": []}
    if verb == "GET" and path == "/_contract/requests":
        return 200, sub.requests
    if verb == "GET" and path == "/_contract/state":
        groups = []
        for g in sorted(sub.groups.values(), key=lambda g: g.name.lower()):
            by = {}
            for (t, _), r in sorted(g.res.items()):
                by.setdefault(r.type, []).append(hook_view(st, sub, g, r)
                                                 if r.type == VM else r.body)
            groups.append(dict(rg_view(sub, g), resources=by))
        return 200, {"resourceGroups": groups, "faults": sub.faults,
                     "operations": [dict(o.view(), id=o.id, verb=o.verb)
                                    for o in sub.ops.values()],
                     "publicIpsInUse": sorted(st.ips_used)}
    if verb == "POST" and path == "/_contract/guest-poweroff":
        g = group(sub, body.get("resourceGroup") or "")
        r = need(g, VM, body.get("vm") or "")
        if r.body["properties"]["provisioningState"] != "Succeeded" or \
                r.extra.get("power") != "running":
            raise err(400, "InvalidParameter", "the VM is not running")
        r.extra["power"] = "stopped"
        return 200, instance_view(r)
    raise err(404, "NotFound", f"no control endpoint {verb} {path}")


# ---------------------------------------------------------------------------------------------
# HTTP

def log(msg):
    print(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]} {msg}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "arm-contract-server"
    st = None   # State, set in main()

    def do_GET(self):
        self.handle_any("GET")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_HEAD(self):
        self.handle_any("HEAD")

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        raw = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return raw
            raw += self.rfile.read(size + 2)[:size]

    def handle_any(self, verb):
        st = self.st
        url = urlsplit(self.path)
        raw = self.read_body()
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers, sub = {}, None
        with st.lock:
            try:
                if url.path.startswith("/_contract/"):
                    if isinstance(body, str):
                        raise err(400, "InvalidRequestContent", "body is not JSON")
                    status, out = control(st, verb, url.path, query, body)
                else:
                    m = re.match(r"/subscriptions/([^/]+)", url.path, re.IGNORECASE)
                    if m and GUID.fullmatch(m.group(1)):
                        sub = st.sub(m.group(1))
                    status, out, headers = self.api(verb, url.path, query, body, sub)
            except ApiError as e:
                status, out, headers = e.status, e.envelope(), e.headers
            except SpecMissing as e:
                status, out = 501, {"error": {"code": "NotImplementedByContractServer",
                                              "message": "The request uses a part of the API "
                                              f"described in {e}, which is not vendored."}}
            except Exception:
                log(traceback.format_exc())
                status, out = 500, {"error": {"code": "InternalServerError",
                                              "message": "contract server bug (see its log)"}}
            if sub is not None:
                sub.requests.append({"method": verb, "path": url.path,
                                     "query": {k: v if len(v) > 1 else v[0]
                                               for k, v in query.items()},
                                     "body": body, "status": status})
            data = b"" if out is None else json.dumps(out, indent=1).encode()
        log(f"{verb} {self.path} -> {status}")
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if verb != "HEAD":
            self.wfile.write(data)

    def api(self, verb, path, query, body, sub):
        st = self.st
        auth = self.headers.get("Authorization")
        if auth is None:
            raise ApiError(401, "AuthenticationFailed", "Authentication failed. The "
                           "'Authorization' header is missing.",
                           headers={"WWW-Authenticate": 'Bearer authorization_uri="https://'
                                    'login.microsoftonline.com/common", error="invalid_token", '
                                    'error_description="The authentication failed because of '
                                    'missing \'Authorization\' header."'})
        if not auth.startswith("Bearer "):
            raise ApiError(401, "AuthenticationFailed", "Authentication failed. The "
                           "'Authorization' header is provided in an invalid format.")
        if not auth[7:].strip():
            raise ApiError(401, "InvalidAuthenticationToken", "The access token is invalid.")
        ctx = {"base": f"http://{self.headers.get('Host', 'localhost')}", "verb": verb,
               "query": query}
        m = STATUS.fullmatch(path)
        if m and verb == "GET":
            if sub is None:
                raise err(400, "InvalidSubscriptionId", "The provided subscription identifier "
                          f"'{m.group(1)}' is malformed or invalid.")
            return op_status(st, sub, m, query, ctx)
        op, pp = st.spec.route(verb, path, only=lambda o: not o.id.startswith(
            ("Resources_", "Tags_")))
        if op is None:
            pm = re.search(r"/providers/([^/]+)/([^/]+)", path)
            if pm:
                raise err(404, "InvalidResourceType", f"The resource type '{pm.group(2)}' could "
                          f"not be found in the namespace '{pm.group(1)}' for api version "
                          f"'{query.get('api-version', [''])[-1]}'.")
            raise err(404, "NotFound", f"The requested URL {path} was not found.")
        provider = {R: "Microsoft.Resources", C: "Microsoft.Compute",
                    N: "Microsoft.Network"}[os.path.dirname(op.file) + "/"]
        want = API[provider]
        got = query.get("api-version", [None])[-1]
        if not got:
            raise err(400, "MissingApiVersionParameter", "The api-version query parameter "
                      "(?api-version=) is required for all requests.")
        if got != want:
            if provider == "Microsoft.Resources":
                raise err(400, "InvalidApiVersionParameter", f"The api-version '{got}' is "
                          f"invalid. The supported versions are '{want}'.")
            rtype = [s for s in re.sub(r"\{[^}]+\}", "", op.template).split("/") if s][-1]
            loc = body.get("location", "global") if isinstance(body, dict) else "global"
            raise err(400, "NoRegisteredProviderFound", "No registered resource provider "
                      f"found for location '{loc}' and API version '{got}' for type "
                      f"'{rtype}'. The supported api-versions are '{want}'. The supported "
                      f"locations are '{','.join(sorted(REGIONS))}'.")
        if sub is None:
            raise err(400, "InvalidSubscriptionId", "The provided subscription identifier "
                      f"'{pp.get('subscriptionId')}' is malformed or invalid.")
        fn = IMPL.get(op.id)
        if fn is None:
            raise err(501, "NotImplementedByContractServer", f"The ARM contract server does not "
                      f"implement {op.id} (documented in {op.file}).")
        params = st.spec.check_params(op, pp, query)
        if isinstance(body, str):
            raise err(400, "InvalidRequestContent", "The request content was invalid and could "
                      "not be deserialized: 'Unexpected character encountered while parsing "
                      "value.'.")
        if op.body is not None:
            if "resourceGroupName" in params and not op.id.startswith("ResourceGroups_"):
                group(sub, params["resourceGroupName"], writing=True)
            if op.id in LOCATED and isinstance(body, dict) and not body.get("location"):
                raise err(400, "LocationRequired", "The location property is required for "
                          "this definition.")
            body = st.spec.validate_body(op, body)
        ctx["op"] = op.id
        return fn(st, sub, params, body, ctx)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--specs", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "azure-specs"),
                    help="directory holding the vendored azure-rest-api-specs files")
    ap.add_argument("--public-ip-pool", default="198.51.100.0/24",
                    help="CIDR the Standard public IP addresses are taken from")
    ap.add_argument("--boot-hook", help="CMD: run as `CMD boot FILE.json` when a VM reaches "
                    "Succeeded and `CMD halt SUBSCRIPTION RG VM` when it is deleted")
    ap.add_argument("--retry-after", type=int, default=0,
                    help="the Retry-After (seconds) the server asks pollers to wait")
    a = ap.parse_args()
    spec = Spec(a.specs, FILES)
    missing = [i for i in IMPL if i not in spec.by_id]
    if missing:
        sys.exit(f"the vendored specs lack operations this server implements: {missing}")
    ex = json.load(open(os.path.join(a.specs, N, "examples",
                                     "NetworkSecurityGroupCreateWithRule.json")))
    rules = [dict(r, properties=dict(r["properties"])) for r in
             ex["responses"]["201"]["body"]["properties"]["defaultSecurityRules"]]
    for r in rules:
        r.pop("id", None)
        r["type"] = "Microsoft.Network/networkSecurityGroups/defaultSecurityRules"
    Handler.st = State(spec, a.public_ip_pool, a.boot_hook, a.retry_after, rules)
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    log(f"ARM contract server on http://{a.host}:{srv.server_address[1]} ({len(spec.ops)} "
        f"documented operations, {len(IMPL)} implemented; api-versions {API}; boot hook "
        f"{a.boot_hook or 'none'})")
    srv.serve_forever()


if __name__ == "__main__":
    main()
