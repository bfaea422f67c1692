#!/usr/bin/env python3
"""moto's missing boot hook: boots the EC2 VMs moto says are running as network namespaces.

moto serves EC2's API but runs no machine. This watches a moto server (boto3, moto's own
environment) and, for every instance that is `running` and carries a `skyx-job` tag, calls a
boot hook (`vmboot.py hook STATE CONTROL ec2`) with a file describing it: instance id, region,
public and private address (moto's: public ones are in 54.214.0.0/16), metadata options, and
the user data RunInstances was given (and, for an instance with a profile, the keys its role
grants: $SKYX_BOOT_ROLE_KEYS, KEY:SECRET). When the instance leaves `running` (terminated by the
gateway or a sweep), it calls the halt hook. It also answers the VMs' guest poweroff
(`POST /_contract/guest-poweroff {"region","instance"}`) as EC2 does: the instance's
shutdown behaviour decides (terminate, or stop).

What it is not: EC2. The launch request itself is moto's to check; this only boots what moto
accepted, as the VM would boot.

Usage: ec2boot.py ENDPOINT PORT HOOK REGION...   (HOOK: the command, `boot FILE` / `halt
REGION INSTANCE` appended)
"""

import base64
import http.server
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time

import boto3

booted = {}
lock = threading.Lock()


def log(msg):
    print(f"ec2boot: {msg}", file=sys.stderr, flush=True)


def client(endpoint, region):
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def hook(cmd, *args):
    log("hook: " + " ".join(args))
    subprocess.Popen(shlex.split(cmd) + list(args), stdin=subprocess.DEVNULL)


def watch(endpoint, cmd, regions, scratch):
    clients = {r: client(endpoint, r) for r in regions}
    while True:
        for region, ec2 in clients.items():
            try:
                pages = ec2.describe_instances(
                    Filters=[{"Name": "tag-key", "Values": ["skyx-job"]}])["Reservations"]
            except Exception as e:  # moto restarting, or gone: the next round tries again
                log(f"{region}: {e}")
                continue
            for inst in (i for r in pages for i in r["Instances"]):
                key, state = (region, inst["InstanceId"]), inst["State"]["Name"]
                with lock:
                    known = key in booted
                if state == "running" and not known and inst.get("PublicIpAddress"):
                    data = ec2.describe_instance_attribute(
                        InstanceId=inst["InstanceId"], Attribute="userData")
                    user_data = base64.b64decode(
                        data.get("UserData", {}).get("Value", "")).decode()
                    resource = {"InstanceId": inst["InstanceId"], "Region": region,
                                "PublicIpAddress": inst["PublicIpAddress"],
                                "PrivateIpAddress": inst.get("PrivateIpAddress", ""),
                                "MetadataOptions": inst.get("MetadataOptions", {}),
                                "UserData": user_data}
                    profile = inst.get("IamInstanceProfile", {}).get("Arn", "")
                    if profile:
                        # The role is named after its profile (the usual convention); its
                        # keys are the ones $SKYX_BOOT_ROLE_KEYS (KEY:SECRET) names.
                        resource["IamRole"] = profile.rsplit("/", 1)[-1]
                        resource["RoleCredentials"] = os.environ.get("SKYX_BOOT_ROLE_KEYS", "")
                    path = os.path.join(scratch, f"{region}.{inst['InstanceId']}.json")
                    with open(path, "w") as f:
                        json.dump(resource, f)
                    with lock:
                        booted[key] = True
                    hook(cmd, "boot", path)
                elif state != "running" and known:
                    with lock:
                        del booted[key]
                    hook(cmd, "halt", region, inst["InstanceId"])
        time.sleep(0.3)


def serve(endpoint, port):
    class PowerOff(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            ec2 = client(endpoint, body["region"])
            behaviour = ec2.describe_instance_attribute(
                InstanceId=body["instance"], Attribute="instanceInitiatedShutdownBehavior"
            )["InstanceInitiatedShutdownBehavior"]["Value"]
            try:
                if behaviour == "terminate":
                    ec2.terminate_instances(InstanceIds=[body["instance"]])
                else:
                    ec2.stop_instances(InstanceIds=[body["instance"]])
                code = 200
            except Exception as e:  # already gone: the gateway terminated it first
                log(f"guest poweroff of {body['instance']}: {e}")
                code = 404
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt, *args):
            log(fmt % args)

    http.server.ThreadingHTTPServer(("127.0.0.1", port), PowerOff).serve_forever()


def main(argv):
    if len(argv) < 4:
        raise SystemExit(__doc__)
    endpoint, port, cmd, regions = argv[0], int(argv[1]), argv[2], argv[3:]
    threading.Thread(target=serve, args=(endpoint, port), daemon=True).start()
    watch(endpoint, cmd, regions, tempfile.mkdtemp(prefix="ec2boot-"))


if __name__ == "__main__":
    main(sys.argv[1:])
