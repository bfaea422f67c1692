"""Self-check of the ARM contract server (azure.py); run by hand, not part of the Rust tests.

    python3 deploy/contracts/selfcheck_azure.py [SPECS_DIR]

(default: deploy/contracts/azure-specs, the vendored azure-rest-api-specs files).

Starts azure.py on a free port with a boot hook that records its calls, drives it with urllib
through the lifecycle a provider uses, and checks every 2xx answer against the operation's
documented response schema (openapi.py conforms) and every error against ARM's envelope. First
it replays the vendored examples: their request bodies must pass the validator and their
responses must conform. Prints one line per check; exits 1 on the first mismatch.
"""
import base64
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
import azure  # noqa: E402
from openapi import Spec  # noqa: E402

SPEC = PORT = None
S = "00000000-0000-4000-8000-000000000001"     # the subscription of the main walk
S2 = "00000000-0000-4000-8000-000000000002"    # another one: must not see S's state
V = {"rg": "2025-04-01", "net": "2025-05-01", "vm": "2025-04-01"}
RG = f"/subscriptions/{S}/resourcegroups/skyx-j1"
NET = f"/subscriptions/{S}/resourceGroups/skyx-j1/providers/Microsoft.Network"
VMS = f"/subscriptions/{S}/resourceGroups/skyx-j1/providers/Microsoft.Compute/virtualMachines"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmFlZHRvcnNraXBwZWRmb3J0ZXN0c29ubHkx skyx"
CLOUD_INIT = "#cloud-config\nruncmd:\n  - echo hello\n"


def vm_body(nic, **kw):
    b = {"location": "eastus", "tags": {"skyx-job": "j1"},
         "identity": {"type": "UserAssigned", "userAssignedIdentities": {
             f"/subscriptions/{S}/resourceGroups/ops/providers/Microsoft.ManagedIdentity/"
             "userAssignedIdentities/skyx-agent": {}}},
         "properties": {
             "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
             "storageProfile": {
                 "imageReference": {"publisher": "Debian", "offer": "debian-12",
                                    "sku": "12-gen2", "version": "latest"},
                 "osDisk": {"createOption": "FromImage", "deleteOption": "Delete",
                            "managedDisk": {"storageAccountType": "StandardSSD_LRS"}}},
             "osProfile": {"computerName": "skyx-j1-a0", "adminUsername": "skyx",
                           "customData": base64.b64encode(CLOUD_INIT.encode()).decode(),
                           "linuxConfiguration": {
                               "disablePasswordAuthentication": True,
                               "ssh": {"publicKeys": [{"path": "/home/skyx/.ssh/authorized_keys",
                                                       "keyData": KEY}]}}},
             "networkProfile": {"networkInterfaces": [
                 {"id": f"{NET}/networkInterfaces/{nic}",
                  "properties": {"primary": True, "deleteOption": "Delete"}}]},
             "priority": "Spot", "evictionPolicy": "Delete",
             "billingProfile": {"maxPrice": -1}}}
    for k, v in kw.items():
        b[k] = v
    return b


def call(verb, path, body=None, status=200, api=None, auth="Bearer test-token", op=None,
         headers=False, raw_url=None):
    url = raw_url or f"http://127.0.0.1:{PORT}{path}"
    if api and not raw_url:
        url += ("&" if "?" in url else "?") + "api-version=" + api
    req = urllib.request.Request(url, method=verb, data=None if body is None else
                                 json.dumps(body).encode(), headers={"Content-Type":
                                                                     "application/json"})
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req) as r:
            got, raw, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        got, raw, hdrs = e.code, e.read(), e.headers
    out = json.loads(raw) if raw else None
    if got != status:
        fail(f"{verb} {path}: status {got}, want {status}: {json.dumps(out)[:500]}")
    if got >= 400 and not path.startswith("/_"):
        err = out["error"]
        assert set(err) <= {"code", "message", "target", "details"} and err["code"] and \
            err["message"], out
    if op and got < 300 and out is not None:
        problems = SPEC.conforms(SPEC.by_id[op].response(got), out)
        if problems:
            fail(f"{verb} {path}: answer is not a documented {op} {got}: {problems[:5]}")
    return (out, hdrs) if headers else out


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)
    print("ok  ", what)


def code(out):
    return out["error"]["code"]


def poll_async(url, want):
    """Polls an Azure-AsyncOperation URL: each answer's status in turn."""
    return [call("GET", "", raw_url=url)["status"] for _ in want]


def main():
    global SPEC, PORT
    specs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "azure-specs")
    SPEC = Spec(specs, azure.FILES)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    PORT = s.getsockname()[1]
    s.close()
    tmp = tempfile.mkdtemp(prefix="arm-selfcheck-")
    hook = os.path.join(tmp, "hook.sh")
    with open(hook, "w") as f:
        f.write(f'#!/bin/sh\necho "$@" >> {tmp}/calls\n'
                f'[ "$1" = boot ] && cp "$2" {tmp}/boot.json\nexit 0\n')
    os.chmod(hook, 0o755)
    srv = subprocess.Popen([sys.executable, os.path.join(HERE, "azure.py"), "--port", str(PORT),
                            "--specs", specs, "--boot-hook", hook,
                            "--public-ip-pool", "198.51.100.0/29"],
                           stderr=open(os.path.join(tmp, "server.log"), "w"))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT)).close()
                break
            except OSError:
                time.sleep(0.1)
        examples(specs)
        run(tmp)
    finally:
        srv.terminate()
    print("selfcheck passed")


def examples(specs):
    """The vendored examples: requests pass the validator, responses conform."""
    ops = {"VirtualMachine_Create_": "VirtualMachines_CreateOrUpdate",
           "NetworkSecurityGroupCreate": "NetworkSecurityGroups_CreateOrUpdate",
           "VirtualNetworkCreate": "VirtualNetworks_CreateOrUpdate",
           "NetworkInterfaceCreate": "NetworkInterfaces_CreateOrUpdate",
           "PublicIpAddressCreate": "PublicIPAddresses_CreateOrUpdate"}
    n = 0
    for path in sorted(glob.glob(f"{specs}/**/examples/**/*.json", recursive=True)):
        op = next((v for k, v in ops.items() if os.path.basename(path).startswith(k)), None)
        if op is None:
            continue
        ex = json.load(open(path))
        SPEC.validate_body(SPEC.by_id[op], ex["parameters"]["parameters"])
        for st in ("200", "201"):
            problems = SPEC.conforms(SPEC.by_id[op].response(st), ex["responses"][st]["body"])
            if problems:
                fail(f"{path}: example {st} does not conform: {problems[:3]}")
        n += 1
    check(n == 7, f"{n} vendored example requests validate and their responses conform")


def run(tmp):
    # Auth, api-version, subscription id.
    e = call("PUT", RG, {"location": "eastus"}, 401, api=V["rg"], auth=None)
    check(code(e) == "AuthenticationFailed", "no Authorization -> 401 AuthenticationFailed")
    e = call("PUT", RG, {"location": "eastus"}, 401, api=V["rg"], auth="Bearer ")
    check(code(e) == "InvalidAuthenticationToken", "empty bearer -> 401 InvalidAuthenticationToken")
    e = call("PUT", RG, {"location": "eastus"}, 400, api="2021-04-01")
    check(code(e) == "InvalidApiVersionParameter", "RG wrong api-version -> 400 "
          "InvalidApiVersionParameter")
    e = call("GET", f"{VMS}/x", None, 400, api="2024-07-01")
    check(code(e) == "NoRegisteredProviderFound", "VM wrong api-version -> 400 "
          "NoRegisteredProviderFound")
    e = call("GET", RG, None, 400)
    check(code(e) == "MissingApiVersionParameter", "no api-version -> 400 "
          "MissingApiVersionParameter")
    e = call("GET", "/subscriptions/not-a-guid/resourcegroups/x", None, 400, api=V["rg"])
    check(code(e) == "InvalidSubscriptionId", "non-GUID subscription -> 400")
    e = call("GET", RG, None, 404, api=V["rg"])
    check(code(e) == "ResourceGroupNotFound", "GET missing RG -> 404 ResourceGroupNotFound")
    e = call("PUT", f"{NET}/publicIPAddresses/ip", {"location": "eastus"}, 404, api=V["net"])
    check(code(e) == "ResourceGroupNotFound", "PUT into missing RG -> 404")

    # Resource groups.
    e = call("PUT", RG, {"tags": {"skyx-job": "j1"}}, 400, api=V["rg"])
    check(code(e) == "LocationRequired", "RG without location -> 400 LocationRequired")
    e = call("PUT", RG, {"location": "eastus", "foo": 1}, 400, api=V["rg"])
    check(code(e) == "InvalidRequestContent", "RG unknown member -> 400 InvalidRequestContent")
    g = call("PUT", RG, {"location": "eastus", "tags": {"skyx-job": "j1"}}, 201, api=V["rg"],
             op="ResourceGroups_CreateOrUpdate")
    check(g["properties"]["provisioningState"] == "Succeeded" and g["name"] == "skyx-j1",
          "RG PUT -> 201 Succeeded")
    call("PUT", RG, {"location": "eastus", "tags": {"skyx-job": "j1", "x": "y"}}, 200,
         api=V["rg"], op="ResourceGroups_CreateOrUpdate")
    e = call("PUT", RG, {"location": "westus"}, 409, api=V["rg"])
    check(code(e) == "InvalidResourceGroupLocation", "RG re-PUT elsewhere -> 409")
    g = call("GET", RG, api=V["rg"], op="ResourceGroups_Get")
    check(g["tags"] == {"skyx-job": "j1", "x": "y"}, "RG GET, tags updated")
    call("PUT", f"/subscriptions/{S}/resourcegroups/other", {"location": "westus2",
                                                             "tags": {"skyx-job": "j2"}}, 201,
         api=V["rg"])
    lst = call("GET", f"/subscriptions/{S}/resourcegroups?$filter=tagName%20eq%20%27skyx-job%27"
               "%20and%20tagValue%20eq%20%27j1%27", api=V["rg"], op="ResourceGroups_List")
    check([x["name"] for x in lst["value"]] == ["skyx-j1"], "RG list tagName+tagValue filter")
    lst = call("GET", f"/subscriptions/{S}/resourcegroups?$filter=tagName%20eq%20%27skyx-job%27"
               "&$top=1", api=V["rg"], op="ResourceGroups_List")
    nxt = call("GET", "", raw_url=lst["nextLink"], op="ResourceGroups_List")
    check(len(lst["value"]) == 1 and [x["name"] for x in nxt["value"]] == ["skyx-j1"],
          "RG list tagName filter, $top + nextLink paging")
    call("GET", f"/subscriptions/{S}/resourcegroups?$filter=name%20eq%20%27x%27", None, 400,
         api=V["rg"])

    # NSG with an inline rule; rules as sub-resources.
    rule = {"name": "skyx-gw", "properties": {
        "protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 100,
        "sourceAddressPrefix": "203.0.113.7/32", "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRanges": ["7000-7001"]}}
    bad_rule = json.loads(json.dumps(rule))
    bad_rule["properties"]["priority"] = 50
    e = call("PUT", f"{NET}/networkSecurityGroups/nsg", {"location": "eastus", "properties": {
        "securityRules": [bad_rule]}}, 400, api=V["net"])
    check(code(e) == "SecurityRuleInvalidPriority", "NSG rule priority 50 -> 400")
    nsg, h = call("PUT", f"{NET}/networkSecurityGroups/nsg", {
        "location": "eastus", "properties": {"securityRules": [rule]}}, 201, api=V["net"],
        op="NetworkSecurityGroups_CreateOrUpdate", headers=True)
    check(nsg["properties"]["provisioningState"] == "Updating" and
          "Azure-AsyncOperation" in h and h["Retry-After"] == "0",
          "NSG PUT -> 201 Updating + Azure-AsyncOperation + Retry-After")
    check(poll_async(h["Azure-AsyncOperation"], [1, 2]) == ["InProgress", "Succeeded"],
          "network async operation: InProgress, Succeeded")
    nsg = call("GET", f"{NET}/networkSecurityGroups/nsg", api=V["net"],
               op="NetworkSecurityGroups_Get")
    check(nsg["properties"]["provisioningState"] == "Succeeded" and
          len(nsg["properties"]["defaultSecurityRules"]) == 6, "NSG GET: Succeeded, 6 default "
          "rules (from the vendored example)")
    r2 = {"properties": dict(rule["properties"], priority=110,
                             sourceAddressPrefix="198.51.100.9/32")}
    out, h = call("PUT", f"{NET}/networkSecurityGroups/nsg/securityRules/skyx-peer-1", r2, 201,
                  api=V["net"], op="SecurityRules_CreateOrUpdate", headers=True)
    poll_async(h["Azure-AsyncOperation"], [1, 2])
    e = call("PUT", f"{NET}/networkSecurityGroups/nsg/securityRules/dup", r2, 400, api=V["net"])
    check(code(e) == "SecurityRuleConflict", "rule PUT, same priority+direction -> 400")
    e = call("PUT", f"{NET}/networkSecurityGroups/nsg/securityRules/p", dict(r2, properties=dict(
        r2["properties"], priority=120, destinationPortRanges=["70000"])), 400, api=V["net"])
    check(code(e) == "SecurityRuleInvalidPortRange", "rule port 70000 -> 400")
    got = call("GET", f"{NET}/networkSecurityGroups/nsg/securityRules/skyx-peer-1", api=V["net"],
               op="SecurityRules_Get")
    check(got["properties"]["provisioningState"] == "Succeeded", "rule PUT -> 201, polled to "
          "Succeeded, GET")
    out, h = call("DELETE", f"{NET}/networkSecurityGroups/nsg/securityRules/skyx-peer-1", None,
                  202, api=V["net"], headers=True)
    call("GET", "", raw_url=h["Location"], status=202)
    call("GET", "", raw_url=h["Location"], status=200)
    call("GET", f"{NET}/networkSecurityGroups/nsg/securityRules/skyx-peer-1", None, 404,
         api=V["net"])
    call("DELETE", f"{NET}/networkSecurityGroups/nsg/securityRules/skyx-peer-1", None, 204,
         api=V["net"])
    check(True, "rule DELETE -> 202 + Location (202, 200) -> gone; again -> 204")

    # VNet with a subnet bound to the NSG.
    vnet = {"location": "eastus", "properties": {
        "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
        "subnets": [{"name": "default", "properties": {
            "addressPrefix": "10.0.0.0/24", "defaultOutboundAccess": False,
            "networkSecurityGroup": {"id": nsg["id"]}}}]}}
    e = call("PUT", f"{NET}/virtualNetworks/vnet", dict(vnet, properties=dict(
        vnet["properties"], subnets=[{"name": "s", "properties": {"addressPrefix":
                                                               "10.1.0.0/24"}}])),
        400, api=V["net"])
    check(code(e) == "NetcfgSubnetRangeOutsideVnet", "subnet outside the VNet -> 400")
    e = call("PUT", f"{NET}/virtualNetworks/vnet", dict(vnet, properties=dict(
        vnet["properties"], subnets=[{"name": "s", "properties": {
            "addressPrefix": "10.0.0.0/24", "networkSecurityGroup": {"id": nsg["id"] + "x"}}}])),
        400, api=V["net"])
    check(code(e) == "InvalidResourceReference", "subnet NSG that does not exist -> 400 "
          "InvalidResourceReference")
    out, h = call("PUT", f"{NET}/virtualNetworks/vnet", vnet, 201, api=V["net"],
                  op="VirtualNetworks_CreateOrUpdate", headers=True)
    poll_async(h["Azure-AsyncOperation"], [1, 2])
    vn = call("GET", f"{NET}/virtualNetworks/vnet", api=V["net"], op="VirtualNetworks_Get")
    subnet = vn["properties"]["subnets"][0]
    check(vn["properties"]["provisioningState"] == "Succeeded" and
          subnet["properties"]["networkSecurityGroup"]["id"] == nsg["id"], "VNet PUT/GET with "
          "subnet bound to the NSG")

    # Public IP: Standard/Static gets an address at creation.
    e = call("PUT", f"{NET}/publicIPAddresses/ip0", {"location": "eastus"}, 400, api=V["net"])
    check(code(e) == "InvalidParameter", "PIP without sku (Basic) -> 400")
    pip_body = {"location": "eastus", "sku": {"name": "Standard"}, "properties": {
        "publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4",
        "deleteOption": "Delete"}}
    pip, h = call("PUT", f"{NET}/publicIPAddresses/ip0", pip_body, 201, api=V["net"],
                  op="PublicIPAddresses_CreateOrUpdate", headers=True)
    check(pip["properties"]["ipAddress"] == "198.51.100.1", "PIP PUT -> 201 with ipAddress "
          "from the pool")
    poll_async(h["Azure-AsyncOperation"], [1, 2])

    # NIC referencing subnet, PIP and NSG.
    nic_body = {"location": "eastus", "properties": {
        "ipConfigurations": [{"name": "ipconfig1", "properties": {
            "subnet": {"id": subnet["id"]}, "publicIPAddress": {"id": pip["id"]},
            "privateIPAllocationMethod": "Dynamic", "primary": True}}],
        "networkSecurityGroup": {"id": nsg["id"]}, "enableAcceleratedNetworking": False}}
    bad_nic = json.loads(json.dumps(nic_body))
    bad_nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"] += "zz"
    e = call("PUT", f"{NET}/networkInterfaces/nic0", bad_nic, 400, api=V["net"])
    check(code(e) == "InvalidResourceReference", "NIC with unknown PIP -> 400 "
          "InvalidResourceReference")
    nic, h = call("PUT", f"{NET}/networkInterfaces/nic0", nic_body, 201, api=V["net"],
                  op="NetworkInterfaces_CreateOrUpdate", headers=True)
    poll_async(h["Azure-AsyncOperation"], [1, 2])
    nic = call("GET", f"{NET}/networkInterfaces/nic0", api=V["net"], op="NetworkInterfaces_Get")
    check(nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] ==
          "10.0.0.4", "NIC PUT/GET: private IP 10.0.0.4 from the subnet ")
    e = call("DELETE", f"{NET}/publicIPAddresses/ip0", None, 400, api=V["net"])
    check(code(e) == "PublicIPAddressInUse", "PIP in use by a NIC cannot be deleted -> 400")

    # VM: validation failures.
    nic_name = "nic0"
    for body, st, want, what in [
        (dict(vm_body(nic_name), foo=1), 400, "InvalidRequestContent", "unknown member"),
        ({k: v for k, v in vm_body(nic_name).items() if k != "location"}, 400,
         "LocationRequired", "missing location"),
        (json.loads(json.dumps(vm_body(nic_name)).replace('"createOption": "FromImage", ', "")),
         400, "InvalidParameter", "missing osDisk.createOption (schema required)"),
        (json.loads(json.dumps(vm_body(nic_name)).replace('"Spot"', '"Regular"')), 400,
         "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines", "evictionPolicy without Spot"),
        (json.loads(json.dumps(vm_body(nic_name)).replace(
            vm_body(nic_name)["properties"]["osProfile"]["customData"],
            base64.b64encode(b"x" * 65536).decode())), 400, "InvalidParameter",
         "customData over 65535 bytes"),
        (json.loads(json.dumps(vm_body(nic_name)).replace('"adminUsername": "skyx"',
                                                          '"adminUsername": "root"')),
         400, "InvalidParameter", "reserved adminUsername root"),
        (json.loads(json.dumps(vm_body(nic_name)).replace('"12-gen2"', '"11"')), 404,
         "PlatformImageNotFound", "unknown image"),
        (json.loads(json.dumps(vm_body(nic_name)).replace("Standard_D2s_v5", "Standard_X9")),
         400, "InvalidParameter", "unknown VM size"),
        (json.loads(json.dumps(vm_body(nic_name)).replace('"UserAssigned"', '"Sometimes"')),
         400, "InvalidRequestContent", "identity.type outside its enum"),
        (json.loads(json.dumps(vm_body(nic_name)).replace("/nic0", "/nope")), 400,
         "InvalidParameter", "NIC that does not exist")]:
        e = call("PUT", f"{VMS}/skyx-j1-a0", body, st, api=V["vm"])
        check(code(e) == want, f"VM PUT, {what} -> {st} {want}")

    # VM: create, poll, boot hook.
    vm, h = call("PUT", f"{VMS}/skyx-j1-a0", vm_body(nic_name), 201, api=V["vm"],
                 op="VirtualMachines_CreateOrUpdate", headers=True)
    check(vm["properties"]["provisioningState"] == "Creating" and
          "customData" not in vm["properties"]["osProfile"] and
          "/providers/Microsoft.Compute/locations/eastus/operations/" in
          h["Azure-AsyncOperation"] and h["Location"].endswith("&monitor=true") and
          h["Retry-After"] == "0", "VM PUT -> 201 Creating + Azure-AsyncOperation + Location + "
          "Retry-After; customData not echoed")
    check(poll_async(h["Azure-AsyncOperation"], [1, 2]) == ["InProgress", "Succeeded"],
          "compute async operation: InProgress, Succeeded")
    got = call("GET", f"{VMS}/skyx-j1-a0", api=V["vm"], op="VirtualMachines_Get")
    check(got["properties"]["provisioningState"] == "Succeeded" and
          "instanceView" not in got["properties"], "GET VM: Succeeded, no instanceView")
    iv = call("GET", f"{VMS}/skyx-j1-a0?$expand=instanceView", api=V["vm"],
              op="VirtualMachines_Get")["properties"]["instanceView"]
    check([s["code"] for s in iv["statuses"]] == ["ProvisioningState/succeeded",
                                                  "PowerState/running"], "instanceView: running")
    time.sleep(0.5)
    boot = json.load(open(os.path.join(tmp, "boot.json")))
    check(boot["skyxPublicIp"] == "198.51.100.1" and boot.get("skyxPrivateIp") == "10.0.0.4"
          and base64.b64decode(boot["properties"]["osProfile"]["customData"]).decode()
          == CLOUD_INIT, "boot hook: VM file with customData, skyxPublicIp, skyxPrivateIp")
    e = call("PUT", f"{VMS}/skyx-j1-a0", json.loads(json.dumps(vm_body(nic_name)).replace(
        "Y2xvdWQ", "Y2xvdWR")), 409, api=V["vm"])
    check(code(e) == "PropertyChangeNotAllowed", "VM re-PUT changing customData -> 409")

    # Faults (all scoped to S, eastus).
    def nic1(name="nic1"):   # a NIC without public IP; VMs delete it with them
        call("PUT", f"{NET}/networkInterfaces/{name}", nic_body | {"properties": dict(
            nic_body["properties"], ipConfigurations=[{"name": "ipconfig1", "properties": {
                "subnet": {"id": subnet["id"]}}}])}, 201, api=V["net"])
    nic1()
    for fault, st, want in [("SkuNotAvailable", 409, "SkuNotAvailable"),
                            ("QuotaExceeded", 409, "OperationNotAllowed")]:
        call("POST", "/_contract/faults", {"subscription": S, "location": "eastus",
                                           "code": fault, "count": 1})
        e = call("PUT", f"{VMS}/skyx-j1-a1", vm_body("nic1"), st, api=V["vm"])
        check(code(e) == want and ("quota" in e["error"]["message"] if fault == "QuotaExceeded"
                                   else "not available in location 'eastus'" in
                                   e["error"]["message"]), f"fault {fault} -> sync {st} {want}")
    call("POST", "/_contract/faults", {"subscription": S, "location": "eastus",
                                       "code": "AllocationFailed", "count": 1})
    vm1, h = call("PUT", f"{VMS}/skyx-j1-a1", vm_body("nic1"), 201, api=V["vm"], headers=True)
    st1 = call("GET", "", raw_url=h["Azure-AsyncOperation"])
    st2 = call("GET", "", raw_url=h["Azure-AsyncOperation"])
    got = call("GET", f"{VMS}/skyx-j1-a1", api=V["vm"], op="VirtualMachines_Get")
    check(st1["status"] == "InProgress" and st2["status"] == "Failed" and
          st2["error"]["code"] == "AllocationFailed" and
          got["properties"]["provisioningState"] == "Failed",
          "fault AllocationFailed -> 201, then operation Failed AllocationFailed, VM Failed")
    e = call("GET", "", raw_url=h["Location"], status=409)
    check(code(e) == "AllocationFailed", "Location poll of the failed operation -> 409 error")
    out, h = call("DELETE", f"{VMS}/skyx-j1-a1", None, 202, api=V["vm"], headers=True)
    poll_async(h["Azure-AsyncOperation"], [1, 2])
    nic1()
    call("POST", "/_contract/faults", {"subscription": S, "location": "eastus",
                                       "code": "ZonalAllocationFailed", "zone": "2"})
    detach = json.loads(json.dumps(vm_body("nic1", zones=["1"])).replace(
        '"deleteOption": "Delete", "managedDisk"', '"deleteOption": "Detach", "managedDisk"'))
    out, h = call("PUT", f"{VMS}/skyx-j1-a2", detach, 201, api=V["vm"], headers=True)
    check(poll_async(h["Azure-AsyncOperation"], [1, 2])[-1] == "Succeeded", "zonal fault in "
          "zone 2 spares zone 1")
    out, h = call("DELETE", f"{VMS}/skyx-j1-a2", None, 202, api=V["vm"], headers=True)
    poll_async(h["Azure-AsyncOperation"], [1, 2])
    disks = call("GET", "/_contract/state?subscription=" + S)["resourceGroups"][1]["resources"]
    check(len(disks.get(azure.DISK, [])) == 1, "VM delete with osDisk deleteOption Detach "
          "leaves the disk")
    nic1()
    out, h = call("PUT", f"{VMS}/skyx-j1-a3", vm_body("nic1", zones=["2"]), 201, api=V["vm"],
                  headers=True)
    res = [call("GET", "", raw_url=h["Azure-AsyncOperation"]) for _ in range(2)]
    check(res[1]["error"]["code"] == "ZonalAllocationFailed", "fault ZonalAllocationFailed "
          "(zone 2) -> async Failed ZonalAllocationFailed")
    call("DELETE", "/_contract/faults?subscription=" + S)

    # Guest poweroff: the VM stays, allocated, stopped.
    call("POST", "/_contract/guest-poweroff", {"subscription": S, "resourceGroup": "skyx-j1",
                                               "vm": "skyx-j1-a0"})
    iv = call("GET", f"{VMS}/skyx-j1-a0/instanceView", api=V["vm"],
              op="VirtualMachines_InstanceView")
    check(iv["statuses"][1]["code"] == "PowerState/stopped", "guest poweroff: VM stays, "
          "PowerState/stopped")

    # Isolation, request log, state.
    check(call("GET", "/_contract/requests?subscription=" + S2) == [] and
          call("GET", "/_contract/state?subscription=" + S2)["resourceGroups"] == [],
          "another subscription sees nothing")
    state = call("GET", "/_contract/state?subscription=" + S)
    rgs = {g["name"]: g for g in state["resourceGroups"]}
    check(set(rgs["skyx-j1"]["resources"]) == {azure.VM, azure.NIC, azure.PIP, azure.NSG,
                                               azure.VNET, azure.DISK}, "state: resources by "
          "type")
    reqs = call("GET", "/_contract/requests?subscription=" + S)
    check(reqs[0]["status"] == 401 and reqs[0]["method"] == "PUT", f"request log ({len(reqs)})")

    # VM delete: NIC (deleteOption Delete) and its PIP (deleteOption Delete) go too.
    out, h = call("DELETE", f"{VMS}/skyx-j1-a0", None, 202, api=V["vm"], headers=True)
    check("Azure-AsyncOperation" in h and h["Location"].endswith("&monitor=true"),
          "VM DELETE -> 202 + Azure-AsyncOperation + Location")
    call("GET", "", raw_url=h["Location"], status=202)
    call("GET", "", raw_url=h["Location"], status=200)
    call("GET", f"{VMS}/skyx-j1-a0", None, 404, api=V["vm"])
    call("GET", f"{NET}/networkInterfaces/nic0", None, 404, api=V["net"])
    call("GET", f"{NET}/publicIPAddresses/ip0", None, 404, api=V["net"])
    check("198.51.100.1" not in call("GET", "/_contract/state?subscription=" + S)[
        "publicIpsInUse"], "VM delete polled to done: VM, NIC, PIP gone, address freed")

    # RG delete cascade (with a VM still Creating in it).
    nic1("nic2")
    out, h4 = call("PUT", f"{VMS}/skyx-j1-a4", vm_body("nic2"), 201, api=V["vm"], headers=True)
    out, h = call("DELETE", RG, None, 202, api=V["rg"], headers=True)
    check("/operationresults/" in h["Location"] and h["Retry-After"] == "0",
          "RG DELETE -> 202 + Location + Retry-After")
    e = call("PUT", f"{NET}/publicIPAddresses/ip9", pip_body, 409, api=V["net"])
    check(code(e) == "ResourceGroupBeingDeleted", "PUT into a deleting RG -> 409")
    call("GET", "", raw_url=h["Location"], status=202)
    call("GET", "", raw_url=h["Location"], status=200)
    call("GET", RG, None, 404, api=V["rg"])
    e = call("GET", f"{VMS}/skyx-j1-a3", None, 404, api=V["vm"])
    check(code(e) == "ResourceGroupNotFound", "RG delete polled to done: RG and its resources "
          "gone (404)")
    st4 = call("GET", "", raw_url=h4["Azure-AsyncOperation"])
    check(st4["status"] == "Canceled", "the VM PUT still running in it ends Canceled")
    time.sleep(0.5)
    calls = open(os.path.join(tmp, "calls")).read().split("\n")
    check(f"halt {S} skyx-j1 skyx-j1-a3" in calls and f"halt {S} skyx-j1 skyx-j1-a0" in calls,
          "halt hooks ran for the deleted VMs")
    e = call("POST", f"/subscriptions/{S}/resourceGroups/other/providers/Microsoft.Compute/"
             "virtualMachines/x/start", None, 501, api=V["vm"])
    check(code(e) == "NotImplementedByContractServer", "documented but unimplemented -> 501")
    e = call("GET", f"/subscriptions/{S}/resourceGroups/other/providers/Microsoft.Compute/"
             "virtualMachine/x", None, 404, api=V["vm"])
    check(code(e) == "InvalidResourceType", "unknown resource type -> 404 InvalidResourceType")


if __name__ == "__main__":
    main()
