#!/usr/bin/env python3
"""What differs between clouds inside a VM that vmboot.py boots: how its resource names it,
how its guest runs the boot scripts the provider sent, and its metadata service.

- EC2: cloud-init runs the instance's user data; the metadata service is IMDSv2 as EC2
  launches it with `HttpTokens: required` (a session token from `PUT /latest/api/token` with
  a TTL of 1 to 21600 s, said back in a header, then every request carries it; without it
  401; a request carrying `X-Forwarded-For` refused), answering `meta-data/public-ipv4`,
  `local-ipv4`, `instance-id`, `placement/region`, `user-data` and, for an instance with a
  profile, `iam/security-credentials/ROLE` (keys the test names: no STS runs here).

- GCE: the guest environment fetches the `startup-script` attribute from the metadata server
  (`/computeMetadata/v1/`, `Metadata-Flavor: Google` required and echoed) and runs it with
  bash as root (GoogleCloudPlatform/guest-agent's metadata script runner). The server's root
  answers any request with `Metadata-Flavor: Google` (how Google's client libraries tell they
  are on GCE); a VM with a service account gets `instance/service-accounts/{default,EMAIL}/
  {email,scopes,aliases,token}`, the token an access token with the VM's scopes (whatever
  scopes the request asks for: an instance's access scopes bound its default token), written
  to the `--tokens` directory when one is given, where the test's GCS emulator looks tokens up
  (deploy/gcs_emulator.py --require-tokens). A VM without one gets 404 there, as on GCE.
- Azure: cloud-init runs the VM's custom data (base64 in `osProfile.customData`), handed over
  at provisioning; the metadata service (`/metadata/instance?api-version=...`, `Metadata: true`
  required) names no public address for a Standard SKU one, as Azure's does not, and hands out
  its managed identities' tokens (`/metadata/identity/oauth2/token`).

The cloud-init here is a stand-in for the two modules skyx's user data uses, as cloud-init's
documentation describes them: `write_files` (path, content, encoding text|b64|base64|gz+b64,
permissions, append), run at init, then `runcmd` (each entry a shell line, or an argv list
quoted for the shell), run as one shell script at the final stage. A user data that is a
script (`#!`) is run as one. Anything else in the cloud-config is refused, not ignored.

Usage: vmguest.py metadata CLOUD RESOURCE_FILE [--tokens DIR] [--listen HOST:PORT]
  (inside the VM's namespace, on 169.254.169.254:80; GCE only: --tokens, and --listen for a
  process of this host told of it as a GCE VM's would be, with GCE_METADATA_HOST)
"""

import base64
import gzip
import http.server
import json
import os
import re
import secrets
import shlex
import socketserver
import subprocess
import sys
import time
import urllib.parse
import urllib.request

URLS = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    print(f"vmguest: {msg}", file=sys.stderr, flush=True)


def describe(cloud, res):
    """(key, public address, what the contract server's guest-poweroff wants) of a VM."""
    if cloud == "gce":
        m = re.search(r"projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$", res["selfLink"])
        project, zone, name = m.groups()
        public = res["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
        return f"{project}/{zone}/{name}", public, {"project": project, "zone": zone,
                                                   "instance": name}
    if cloud == "ec2":
        region, instance = res["Region"], res["InstanceId"]
        return f"{region}/{instance}", res["PublicIpAddress"], {"region": region,
                                                               "instance": instance}
    if cloud == "azure":
        m = re.search(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                      r"Microsoft\.Compute/virtualMachines/([^/]+)$", res["id"], re.I)
        sub, group, vm = m.groups()
        return f"{sub}/{group}/{vm}", res["skyxPublicIp"], {
            "subscription": sub, "resourceGroup": group, "vm": vm}
    raise SystemExit(f"vmboot: cloud {cloud} is not booted")


def run_guest(cloud, resource_file, root, env):
    """Runs the boot scripts the provider sent, as the cloud's guest runs them."""
    if cloud == "gce":
        req = urllib.request.Request(
            "http://169.254.169.254/computeMetadata/v1/instance/attributes/startup-script",
            headers={"Metadata-Flavor": "Google"})
        script = wait_for(lambda: URLS.open(req, timeout=2).read())
        path = os.path.join(root, "startup-script")
        with open(path, "wb") as f:
            f.write(script)
        return subprocess.call(["/bin/bash", path], env=env, cwd="/")
    with open(resource_file) as f:
        res = json.load(f)
    if cloud == "ec2":
        return cloud_init(res["UserData"], root, env)
    custom = res["properties"]["osProfile"].get("customData", "")
    return cloud_init(base64.b64decode(custom).decode(), root, env)


def wait_for(fetch):
    for _ in range(300):
        try:
            return fetch()
        except OSError:
            time.sleep(0.1)
    raise SystemExit("vmguest: the metadata server never answered")


def cloud_init(user_data, root, env):
    if user_data.startswith("#!"):
        path = os.path.join(root, "user-data")
        with open(path, "w") as f:
            f.write(user_data)
        os.chmod(path, 0o700)
        return subprocess.call([path], env=env, cwd="/")
    if not user_data.startswith("#cloud-config"):
        log("user data is neither #cloud-config nor a script: cloud-init would skip it")
        return 1
    import yaml  # PyYAML, in the contracts environment (deploy/test-servers.sh)
    config = yaml.safe_load(user_data) or {}
    unknown = set(config) - {"write_files", "runcmd"}
    if unknown:
        log(f"cloud-config modules this stand-in does not run: {sorted(unknown)}")
        return 1
    for entry in config.get("write_files", []):
        content, encoding = entry.get("content", ""), entry.get("encoding", "text")
        if encoding in ("b64", "base64"):
            data = base64.b64decode(content)
        elif encoding in ("gz+b64", "gzip+base64", "gz+base64"):
            data = gzip.decompress(base64.b64decode(content))
        else:
            data = content.encode()
        path = os.path.normpath(entry["path"])
        # Only where the VM's own overlays are: anywhere else would be this host's files.
        if not path.startswith(("/etc/", "/usr/local/", "/var/")):
            log(f"write_files {path}: outside /etc, /usr/local and /var, the VM's own layers")
            return 1
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab" if entry.get("append") else "wb") as f:
            f.write(data)
        os.chmod(path, int(str(entry.get("permissions", "0644")), 8))
    lines = ["#!/bin/sh"]
    for cmd in config.get("runcmd", []):
        lines.append(cmd if isinstance(cmd, str) else shlex.join(str(c) for c in cmd))
    path = os.path.join(root, "runcmd")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return subprocess.call(["/bin/sh", path], env=env, cwd="/")


# --- metadata services ----------------------------------------------------------------------

def gce_values(res):
    m = re.search(r"projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$", res["selfLink"])
    project, zone, name = m.groups()
    nic = res["networkInterfaces"][0]
    values = {
        "instance/name": name,
        "instance/zone": f"projects/{project}/zones/{zone}",
        "instance/id": res.get("id", ""),
        "instance/network-interfaces/0/ip": nic.get("networkIP", ""),
        "project/project-id": project,
    }
    for i, ac in enumerate(nic.get("accessConfigs", [])):
        if "natIP" in ac:
            values[f"instance/network-interfaces/0/access-configs/{i}/external-ip"] = ac["natIP"]
    for item in res.get("metadata", {}).get("items", []):
        values[f"instance/attributes/{item['key']}"] = item["value"]
    for account in res.get("serviceAccounts", [])[:1]:
        for alias in ("default", account["email"]):
            base = f"instance/service-accounts/{alias}/"
            values[base + "email"] = account["email"]
            values[base + "aliases"] = "default\n"
            values[base + "scopes"] = "".join(s + "\n" for s in account["scopes"])
    return values


def gce_token(res, tokens):
    """(status, body) of `instance/service-accounts/ACCOUNT/token`: an access token of the VM's
    account with the VM's scopes, as GCE's metadata server hands out."""
    accounts = res.get("serviceAccounts", [])
    if not accounts:
        return 404, "Not Found\n"
    account = accounts[0]
    token = "ya29.stand-in." + secrets.token_urlsafe(32)
    if tokens:
        os.makedirs(tokens, exist_ok=True)
        with open(os.path.join(tokens, token), "w") as f:
            json.dump({"email": account["email"], "scopes": account["scopes"]}, f)
    return 200, json.dumps({"access_token": token, "expires_in": 3599,
                            "token_type": "Bearer"})


def azure_document(res):
    m = re.search(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/", res["id"], re.I)
    return {
        "compute": {"name": res["name"], "location": res["location"],
                    "vmId": res["properties"].get("vmId", ""), "subscriptionId": m.group(1),
                    "resourceGroupName": m.group(2),
                    "vmSize": res["properties"]["hardwareProfile"]["vmSize"]},
        # A Standard SKU public address is not in the metadata service (cloud-contracts B.7).
        "network": {"interface": [{"ipv4": {"ipAddress": [
            {"privateIpAddress": res.get("skyxPrivateIp", ""), "publicIpAddress": ""}]}}]},
    }


def azure_identity_token(res, query):
    """(status, body) of IMDS's managed-identity token endpoint for the VM `res`, as Azure's
    documents it (learn.microsoft.com, "How to use managed identities for Azure resources on an
    Azure VM to acquire an access token"): `resource` required; `msi_res_id`, `client_id` or
    `object_id` pick a user-assigned identity, none the system-assigned one; an identity the VM
    does not have is 400 "Identity not found". The token is a JWT with the claims Entra ID
    puts in a managed identity's v1 token and no real signature: no key of Microsoft's signs it,
    and the storage stand-in (Azurite's OAuth "basic" mode) checks claims, not signatures."""
    def bad(description):
        return 400, {"error": "invalid_request", "error_description": description}

    resource = query.get("resource", [""])[0]
    if not resource:
        return bad("Required audience parameter not specified")
    identity = res.get("identity") or {}
    assigned = {k.lower(): v for k, v in (identity.get("userAssignedIdentities") or {}).items()}
    tenant = identity.get("tenantId") or "72f988bf-86f1-41af-91ab-2d7cd011db47"
    if "msi_res_id" in query:
        chosen = assigned.get(query["msi_res_id"][0].lower())
    elif "client_id" in query:
        chosen = next((v for v in assigned.values() if v.get("clientId") == query["client_id"][0]), None)
    elif "object_id" in query:
        chosen = next((v for v in assigned.values() if v.get("principalId") == query["object_id"][0]), None)
    elif "SystemAssigned" in identity.get("type", ""):
        chosen = {"principalId": identity["principalId"], "clientId": identity["principalId"]}
    else:
        chosen = None
    if chosen is None:
        return bad("Identity not found")
    now = int(time.time())
    claims = {"aud": resource, "iss": f"https://sts.windows.net/{tenant}/", "iat": now - 300,
              "nbf": now - 300, "exp": now + 86399, "aio": "stand-in", "appid": chosen["clientId"],
              "appidacr": "2", "idp": f"https://sts.windows.net/{tenant}/", "idtyp": "app",
              "oid": chosen["principalId"], "sub": chosen["principalId"], "tid": tenant,
              "ver": "1.0", "xms_mirid": res["id"]}

    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = ".".join([part({"typ": "JWT", "alg": "RS256", "kid": "stand-in"}), part(claims),
                      base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()])
    # expires_on and expires_in are strings of seconds, as IMDS sends them.
    return 200, {"access_token": token, "client_id": chosen["clientId"],
                 "expires_in": "86399", "expires_on": str(claims["exp"]),
                 "ext_expires_in": "86399", "not_before": str(claims["nbf"]),
                 "resource": resource, "token_type": "Bearer"}


def ec2_values(res):
    values = {
        "meta-data/public-ipv4": res["PublicIpAddress"],
        "meta-data/local-ipv4": res["PrivateIpAddress"],
        "meta-data/instance-id": res["InstanceId"],
        "meta-data/placement/region": res["Region"],
        "user-data": res["UserData"],
    }
    # An instance profile's role credentials, as EC2 serves them to the VM (the keys its
    # role grants are the test's to say: there is no STS here).
    role, keys = res.get("IamRole"), res.get("RoleCredentials")
    if role and keys:
        key_id, secret = keys.split(":", 1)
        values["meta-data/iam/security-credentials/"] = role
        values[f"meta-data/iam/security-credentials/{role}"] = json.dumps({
            "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": key_id,
            "SecretAccessKey": secret, "Token": "",
            "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6 * 3600)),
        })
    return values


def metadata(cloud, resource_file, tokens=None, listen=("169.254.169.254", 80)):
    with open(resource_file) as f:
        res = json.load(f)
    if cloud == "ec2":
        return ec2_metadata(res)
    values = gce_values(res) if cloud == "gce" else None
    document = azure_document(res) if cloud == "azure" else None

    class Metadata(http.server.BaseHTTPRequestHandler):
        def answer(self, code, text, content_type="application/text"):
            body = text.encode()
            self.send_response(code)
            if cloud == "gce":
                self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if "X-Forwarded-For" in self.headers:
                return self.answer(403, "Forbidden: proxied requests are refused\n")
            if cloud == "gce":
                if url.path == "/":
                    return self.answer(200, "computeMetadata/\n")
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self.answer(403, "Missing Metadata-Flavor:Google header.\n")
                key = url.path.removeprefix("/computeMetadata/v1/")
                account = re.fullmatch(r"instance/service-accounts/([^/]+)/token", key)
                if account and f"instance/service-accounts/{account.group(1)}/email" in values:
                    code, body = gce_token(res, tokens)
                    return self.answer(code, body, "application/json")
                if key == url.path or key not in values:
                    return self.answer(404, "Not Found\n")
                return self.answer(200, values[key])
            query = urllib.parse.parse_qs(url.query)
            if self.headers.get("Metadata", "").lower() != "true":
                return self.answer(400, json.dumps({"error": "Bad request. Required metadata header not specified"}), "application/json")
            if "api-version" not in query:
                return self.answer(400, json.dumps({"error": "Bad request. api-version was not specified in the request"}), "application/json")
            if url.path == "/metadata/identity/oauth2/token":
                code, answer = azure_identity_token(res, query)
                return self.answer(code, json.dumps(answer), "application/json")
            if not url.path.startswith("/metadata/instance"):
                return self.answer(404, json.dumps({"error": "Not found"}), "application/json")
            node = document
            for part in [p for p in url.path.removeprefix("/metadata/instance").split("/") if p]:
                node = node[int(part)] if isinstance(node, list) else node.get(part)
                if node is None:
                    return self.answer(404, json.dumps({"error": "Not found"}), "application/json")
            if query.get("format") == ["text"] and not isinstance(node, (dict, list)):
                return self.answer(200, str(node))
            return self.answer(200, json.dumps(node), "application/json")

        def log_message(self, fmt, *args):
            log("metadata: " + fmt % args)

    serve(Metadata, listen)


def ec2_metadata(res):
    values, tokens = ec2_values(res), {}

    class Imds(http.server.BaseHTTPRequestHandler):
        def answer(self, code, text=""):
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            if "X-Forwarded-For" in self.headers:
                return self.answer(403)
            if self.path != "/latest/api/token":
                return self.answer(404)
            try:
                ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
            except ValueError:
                return self.answer(400)
            if not 1 <= ttl <= 21600:
                return self.answer(400)
            token = base64.b64encode(os.urandom(32)).decode()
            tokens[token] = time.time() + ttl
            body = token.encode()
            self.send_response(200)
            # EC2 says the token's TTL back; the AWS SDKs refuse a token without it.
            self.send_header("X-aws-ec2-metadata-token-ttl-seconds", str(ttl))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            token = self.headers.get("X-aws-ec2-metadata-token", "")
            # Tokens required: IMDSv1 (no token) and expired tokens get 401.
            if tokens.get(token, 0) < time.time():
                return self.answer(401)
            key = self.path.split("?")[0].removeprefix("/latest/")
            if key not in values:
                return self.answer(404)
            self.answer(200, values[key])

        def log_message(self, fmt, *args):
            log("metadata: " + fmt % args)

    serve(Imds)


def serve(handler, listen=("169.254.169.254", 80)):
    class Server(http.server.ThreadingHTTPServer):
        def server_bind(self):
            # HTTPServer's own asks DNS for the address's name: a VM without a resolver would
            # wait out its timeouts before answering anything.
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]

    Server(listen, handler).serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["metadata"]:
        options = dict(zip(sys.argv[4::2], sys.argv[5::2]))
        unknown = set(options) - {"--tokens", "--listen"}
        if unknown or len(sys.argv[4:]) % 2 or (options and sys.argv[2] != "gce"):
            raise SystemExit(__doc__)
        host, _, port = options.get("--listen", "169.254.169.254:80").rpartition(":")
        metadata(sys.argv[2], sys.argv[3], options.get("--tokens"), (host, int(port)))
    else:
        raise SystemExit(__doc__)
