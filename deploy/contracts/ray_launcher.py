"""A stand-in for Ray's cluster launcher CLI (`ray up`, `ray dashboard`, `ray down`,
`ray --version`), for the tests of `skyx run --compute ray --ray-launch`: no cloud is reachable
here, so no node is made. It is NOT Ray's launcher. What is real: each config is checked by the
installed Ray's own code, as `ray up` checks it before it calls any cloud
(`prepare_config` then `validate_config`, which validates against the `ray-schema.json` Ray
ships); each command's arguments are parsed by Ray's own CLI (`ray.scripts.scripts`), so a
flag Ray does not have is refused; and the head the tunnel reaches is a real Ray head.

Run with the Python of the Ray install (it imports ray). Settings, from the environment:
  SKYX_RAY_STANDIN_HEAD    http://HOST:PORT of the real head every "cluster" stands for
  SKYX_RAY_STANDIN_RECORD  a file each command appends a line to: `up NAME`, `dashboard NAME
                           PID`, `down NAME`, `invalid NAME: WHY`
  SKYX_RAY_STANDIN_FULL    a cloud region (the config's `region` or `location`) where `up`
                           fails as EC2 does with no capacity
  SKYX_RAY_STANDIN_ROOT    `up` does the config's file mounts whose targets lie under it (a
                           node's disk, here)
"""

import asyncio
import os
import shutil
import sys
import urllib.parse

import click
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts import scripts

VERSION = "2.60.0"


def record(line):
    with open(os.environ["SKYX_RAY_STANDIN_RECORD"], "a") as f:
        f.write(line + "\n")


def load(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    try:
        validate_config(prepare_config(config))
    except Exception as e:  # what `ray up` would refuse the config for
        record(f"invalid {config.get('cluster_name')}: {str(e).splitlines()[0]}")
        print(f"invalid cluster config {path}: {e}", file=sys.stderr)
        sys.exit(1)
    return config


def up(path):
    config = load(path)
    name = config["cluster_name"]
    provider = config["provider"]
    region = provider.get("region") or provider.get("location")
    if region == os.environ.get("SKYX_RAY_STANDIN_FULL"):
        record(f"up {name} (full)")
        print("botocore.exceptions.ClientError: An error occurred "
              "(InsufficientInstanceCapacity) when calling the RunInstances operation: "
              "We currently do not have sufficient capacity in the Availability Zone you "
              "requested.", file=sys.stderr)
        sys.exit(1)
    root = os.environ.get("SKYX_RAY_STANDIN_ROOT")
    for target, source in config.get("file_mounts", {}).items():
        if not os.access(source, os.R_OK):
            print(f"file mount {source}: not readable", file=sys.stderr)
            sys.exit(1)
        if root and os.path.abspath(target).startswith(os.path.abspath(root) + os.sep):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(source, target)
            os.chmod(target, 0o755)
    record(f"up {name}")
    print(f"Cluster {name}: up (stand-in: no node was made)")


async def forward(port, head):
    host, head_port = head.hostname, head.port

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, head_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def dashboard(path, port):
    config = load(path)
    record(f"dashboard {config['cluster_name']} {os.getpid()}")
    head = urllib.parse.urlsplit(os.environ["SKYX_RAY_STANDIN_HEAD"])
    asyncio.run(forward(port, head))


def down(path):
    config = load(path)
    record(f"down {config['cluster_name']}")


def main(argv):
    if argv == ["--version"]:
        print(f"ray, version {VERSION}")
        return
    commands = {"up": scripts.up, "down": scripts.down, "dashboard": scripts.dashboard}
    if not argv or argv[0] not in commands:
        print(f"stand-in ray: no command {argv[:1]}", file=sys.stderr)
        sys.exit(2)
    # The arguments as Ray's own CLI parses them: a flag it has not is refused, as it would be.
    try:
        params = commands[argv[0]].make_context(argv[0], list(argv[1:])).params
    except click.exceptions.ClickException as e:
        print(f"ray {argv[0]}: {e.format_message()}", file=sys.stderr)
        sys.exit(2)
    config = params["cluster_config_file"]
    if argv[0] == "up":
        up(config)
    elif argv[0] == "down":
        down(config)
    else:
        dashboard(config, params["port"])


if __name__ == "__main__":
    main(sys.argv[1:])
