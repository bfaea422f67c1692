#!/usr/bin/env python3
"""Boots a contract server's VMs as network namespaces on this machine (root; iproute2).

What it is: the nearest thing to a cloud VM that runs here. No emulator of GCE or Azure compute
exists, and moto runs no machines; so when a contract server (gce.py, azure.py) or moto's
watcher (ec2boot.py) says a VM is running, it calls this as its boot hook, and the VM is:
- a network namespace holding the VM's external address (the contract server's NAT/public IP
  pool) on a veth attached to a bridge on this host, so the gateway (on the host) and the other
  VMs reach it at that address, as they would on the internet;
- a metadata server at 169.254.169.254 inside the namespace that answers as the cloud's does
  (vmguest.py: EC2's IMDSv2, GCE's `Metadata-Flavor: Google` and its service account's tokens,
  kept in STATE/gce-tokens for the test's GCS emulator, Azure's `Metadata: true`); on GCE,
  `metadata.google.internal` names it in the VM's /etc/hosts, as GCE's images do;
- its own mount view: /etc, /usr/local and /var are overlays whose writes stay the VM's (what
  the bootstrap installs and writes never touches this host), everything else is the host's;
  its certificate bundle also trusts STATE/trusted-ca.pem when the test wrote one (the
  authority of the test's HTTPS stores);
- the exact boot scripts the provider sent, run as the cloud's guest runs them (GCE's guest
  environment: `startup-script` from the metadata server, with bash; EC2 and Azure:
  cloud-init on the user or custom data).

What it is not (and says so in the README): not a kernel, not systemd, no firewall, not a
sandbox: the shims come first on the bootstrap's PATH (a script calling /bin/systemctl by its
full path would reach this host's), and files outside the overlays are this host's. systemd is
stood in for by `systemctl`/`poweroff` shims first on the VM's PATH: `systemctl enable --now
UNIT` reads the unit file the bootstrap wrote and starts its ExecStart as root (EnvironmentFile
and LoadCredential honoured; DynamicUser, sandboxing and limits are not), and runs ExecStopPost
when it exits; `poweroff` kills the VM's processes and tells the contract server the guest
powered off (GCE stops the VM; the provider then deletes it). The agent binary is downloaded
by the bootstrap itself, from a URL the test serves on the bridge, and checked by its pin.

Usage (STATE: a directory this run owns; nothing outside it, the bridge and the namespaces
named in it is touched):
  vmboot.py up STATE BRIDGE_CIDR PUBLIC_CIDR...   bridge (host address BRIDGE_CIDR's), routes
  vmboot.py down STATE                            every VM halted, bridge and routes removed
  vmboot.py hook STATE CONTROL_URL CLOUD boot FILE   (a boot hook, FILE appended; CLOUD:
                                                     gce, azure, ec2)
  vmboot.py hook STATE CONTROL_URL CLOUD halt ARGS.. (its halt hook)
"""

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import vmguest

HERE = os.path.abspath(__file__)
GUEST = os.path.join(os.path.dirname(HERE), "vmguest.py")
PREFIX = "sxvm"
# Every address this talks to is on this machine or its bridge: never through a proxy the
# environment names.
URLS = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    print(f"vmboot: {msg}", file=sys.stderr, flush=True)


def run(*cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


def net_file(state):
    return os.path.join(state, "net.json")


def load_net(state):
    with open(net_file(state)) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        return json.load(f)


def host_net(state):
    """This host's network namespace, pinned at `up`: a VM's poweroff tells the contract
    server (listening on this host's loopback) from inside the VM's namespace through it."""
    return os.path.join(state, "hostnet")


# --- the host side: bridge up, down ---------------------------------------------------------

def up(state, bridge_cidr, publics):
    os.makedirs(os.path.join(state, "vms"), exist_ok=True)
    iface = ipaddress.ip_interface(bridge_cidr)
    bridge = PREFIX + hashlib.sha256(state.encode()).hexdigest()[:6] + "b"
    net = {"bridge": bridge, "cidr": str(iface), "publics": publics, "next": 2}
    # Saved first: `down` removes whatever of it exists, even after an `up` that failed.
    with open(net_file(state), "w") as f:
        json.dump(net, f)
    open(host_net(state), "w").close()
    run("mount", "--bind", "/proc/self/ns/net", host_net(state))
    run("ip", "link", "add", bridge, "type", "bridge")
    run("ip", "addr", "add", str(iface), "dev", bridge)
    run("ip", "link", "set", bridge, "up")
    for cidr in publics:
        # On-link: the host asks for a VM's address on the bridge and its namespace answers.
        run("ip", "route", "add", cidr, "dev", bridge)
    log(f"bridge {bridge} {iface}, public {' '.join(publics)}")


def down(state):
    try:
        net = load_net(state)
    except FileNotFoundError:
        return
    vms = os.path.join(state, "vms")
    for name in sorted(os.listdir(vms)) if os.path.isdir(vms) else []:
        halt_ns(state, name[:-5])
    for cidr in net["publics"]:
        run("ip", "route", "del", cidr, "dev", net["bridge"], check=False)
    run("ip", "link", "del", net["bridge"], check=False)
    run("umount", host_net(state), check=False)
    os.remove(net_file(state))


# --- one VM ---------------------------------------------------------------------------------

def ns_name(state, key):
    # Salted with the run's state directory: two runs booting the same VM name never share
    # a namespace.
    return PREFIX + hashlib.sha256(f"{os.path.abspath(state)}\0{key}".encode()).hexdigest()[:8]


def boot(state, control, cloud, resource_file):
    with open(resource_file) as f:
        res = json.load(f)
    key, public, power = vmguest.describe(cloud, res)
    ns = ns_name(state, key)
    vm_dir = os.path.join(state, "vm-" + ns)
    os.makedirs(vm_dir, exist_ok=True)
    res_copy = os.path.join(vm_dir, "instance.json")
    with open(res_copy, "w") as f:
        json.dump(res, f)
    record = {"ns": ns, "key": key, "cloud": cloud, "public": public, "dir": vm_dir,
              "state": state, "control": control, "power": power}
    with open(os.path.join(state, "vms", ns + ".json"), "w") as f:
        json.dump(record, f)
    # The namespace and its link to the bridge (hooks run concurrently: the next private
    # address is taken under a lock).
    with open(net_file(state), "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        net = json.load(f)
        n = net["next"]
        net["next"] = n + 1
        f.seek(0)
        f.truncate()
        json.dump(net, f)
    host_if, bridge_ip = "v" + ns[len(PREFIX):] + "h", ipaddress.ip_interface(net["cidr"])
    private = ipaddress.ip_interface(f"{bridge_ip.network.network_address + n}/{bridge_ip.network.prefixlen}")
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "link", "set", host_if, "master", net["bridge"], "up")
    inside = ["ip", "netns", "exec", ns]
    run(*inside, "ip", "link", "set", "lo", "up")
    run(*inside, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
    run(*inside, "ip", "addr", "add", str(private), "dev", "eth0")
    run(*inside, "ip", "addr", "add", f"{public}/32", "dev", "eth0")
    run(*inside, "ip", "link", "set", "eth0", "up")
    for cidr in net["publics"]:
        # Peers by their public addresses, from this VM's own.
        run(*inside, "ip", "route", "add", cidr, "dev", "eth0", "src", public)
    run(*inside, "ip", "route", "add", "default", "via", str(bridge_ip.ip))
    # Its metadata server, then the machine itself in its own mount view.
    logf = open(os.path.join(vm_dir, "vm.log"), "ab")
    # GCE's tokens go where the test's GCS emulator looks them up (gcs_emulator.py).
    tokens = ["--tokens", os.path.join(state, "gce-tokens")] if cloud == "gce" else []
    subprocess.Popen([*inside, sys.executable, GUEST, "metadata", cloud, res_copy, *tokens],
                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    subprocess.Popen([*inside, "unshare", "--mount", "--propagation", "private", "--",
                      sys.executable, HERE, "machine", state, ns],
                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    log(f"booted {key} as namespace {ns} at {public}")


def halt_ns(state, ns):
    """Stops every process of the VM and removes its namespace (and so its veth)."""
    pids = run("ip", "netns", "pids", ns, check=False).split()
    for pid in pids:
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    run("ip", "netns", "del", ns, check=False)
    try:
        os.remove(os.path.join(state, "vms", ns + ".json"))
    except FileNotFoundError:
        pass
    log(f"halted namespace {ns}")


def halt(state, cloud, args):
    """The halt hook: GCE `PROJECT ZONE NAME`, Azure `SUB GROUP VM`, EC2 `REGION INSTANCE`."""
    halt_ns(state, ns_name(state, "/".join(args)))


# --- inside the VM --------------------------------------------------------------------------

SHIMS = {
    "systemctl": "systemctl",
    "poweroff": "poweroff",
    "shutdown": "poweroff",
    "reboot": "poweroff",
}


def machine(state, ns):
    """Runs in the VM's namespace and its own mount namespace: overlays, shims, the bootstrap."""
    with open(os.path.join(state, "vms", ns + ".json")) as f:
        vm = json.load(f)
    root = vm["dir"]
    for path in ("/etc", "/usr/local", "/var"):
        layer = os.path.join(root, "layers", path.strip("/").replace("/", "_"))
        os.makedirs(layer + "/upper", exist_ok=True)
        os.makedirs(layer + "/work", exist_ok=True)
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={path},upperdir={layer}/upper,workdir={layer}/work", path)
    # The image trusts the authority that signed the test's HTTPS stores, as a cloud's images
    # trust the public ones that sign the clouds' own endpoints (in the VM's /etc only).
    ca = os.path.join(state, "trusted-ca.pem")
    if os.path.exists(ca):
        os.makedirs("/etc/ssl/certs", exist_ok=True)
        with open(ca, "rb") as src, open("/etc/ssl/certs/ca-certificates.crt", "ab") as dst:
            dst.write(b"\n" + src.read())
    if vm["cloud"] == "gce":
        # GCE's images name the metadata server in /etc/hosts (Google's client libraries ask
        # for it by name).
        with open("/etc/hosts", "a") as f:
            f.write("169.254.169.254 metadata.google.internal metadata\n")
    shim_dir = os.path.join(root, "shims")
    os.makedirs(shim_dir, exist_ok=True)
    for name, verb in SHIMS.items():
        shim = os.path.join(shim_dir, name)
        with open(shim, "w") as f:
            f.write(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(HERE)} "
                    f"shim {shlex.quote(state)} {ns} {verb} \"$@\"\n")
        os.chmod(shim, 0o755)
    env = {"PATH": f"{shim_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8"}
    code = vmguest.run_guest(vm["cloud"], os.path.join(root, "instance.json"), root, env)
    log(f"the guest's boot scripts exited {code}")


def unit_service(path):
    """The [Service] keys of a unit file (continuation lines joined)."""
    text = open(path).read().replace("\\\n", " ")
    service, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            service.setdefault(k.strip(), []).append(v.strip())
    return service


def expand(text, env):
    return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), text)


def shim(state, ns, verb, args):
    with open(os.path.join(state, "vms", ns + ".json")) as f:
        vm = json.load(f)
    if verb == "poweroff":
        return poweroff(vm)
    args = [a for a in args if a != "--no-block"]
    if args == ["daemon-reload"]:
        return 0
    if args == ["poweroff"]:
        return poweroff(vm)
    if args[:2] != ["enable", "--now"] or len(args) != 3:
        log(f"systemctl stand-in: {' '.join(args)} is not supported")
        return 1
    unit = unit_service(os.path.join("/etc/systemd/system", args[2]))
    env = dict(os.environ)
    for env_file in unit.get("EnvironmentFile", []):
        for line in open(env_file.lstrip("-")):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    creds = os.path.join(vm["dir"], "credentials")
    os.makedirs(creds, mode=0o700, exist_ok=True)
    for cred in unit.get("LoadCredential", []):
        name, source = cred.split(":", 1)
        with open(source, "rb") as src, open(os.path.join(creds, name), "wb") as dst:
            dst.write(src.read())
    env["CREDENTIALS_DIRECTORY"] = creds
    start = shlex.split(expand(unit["ExecStart"][0], env))
    stop = [shlex.split(expand(c.lstrip("+-"), env)) for c in unit.get("ExecStopPost", [])]
    # `/bin/systemctl --no-block poweroff` is this stand-in's, not the host's.
    shims = os.path.join(vm["dir"], "shims")
    for cmd in stop:
        if os.path.basename(cmd[0]) in SHIMS:
            cmd[0] = os.path.join(shims, os.path.basename(cmd[0]))
    # The service runs on when this command returns, as under systemd; its stop hooks run
    # when it exits.
    if os.fork() == 0:
        os.setsid()
        out = open(os.path.join(vm["dir"], "agent.log"), "ab")
        code = subprocess.call(start, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        log(f"{args[2]} exited {code}")
        for cmd in stop:
            subprocess.call(cmd, env=env)
        os._exit(0)
    return 0


def poweroff(vm):
    """What the guest's poweroff does on the cloud: tell the contract server, then stop."""
    if vm["power"]:
        told = subprocess.run(
            ["nsenter", f"--net={host_net(vm['state'])}", sys.executable, HERE, "tell",
             vm["control"] + "/_contract/guest-poweroff", json.dumps(vm["power"])])
        if told.returncode != 0:
            log("could not tell the contract server of the poweroff")
    log(f"{vm['key']} powered off")
    for pid in run("ip", "netns", "pids", vm["ns"], check=False).split():
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 0


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    verb, rest = argv[0], argv[1:]
    if verb == "up":
        up(rest[0], rest[1], rest[2:])
    elif verb == "down":
        down(rest[0])
    elif verb == "hook":
        state, control, cloud, what = rest[:4]
        if what == "boot":
            boot(state, control, cloud, rest[4])
        elif what == "halt":
            halt(state, cloud, rest[4:])
    elif verb == "machine":
        machine(rest[0], rest[1])
    elif verb == "shim":
        sys.exit(shim(rest[0], rest[1], rest[2], rest[3:]))
    elif verb == "tell":
        req = urllib.request.Request(rest[0], data=rest[1].encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            URLS.open(req, timeout=5).read()
        except urllib.error.HTTPError as e:
            # 404: the VM was deleted first (the gateway's teardown), nothing to power off.
            if e.code != 404:
                raise
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
