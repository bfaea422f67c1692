#!/usr/bin/env bash
# Installs (if missing) and starts the real local object-store servers the tests run against,
# all on 127.0.0.1, each on a free port picked at start (so a stale server of another checkout
# can never answer for this one):
#   S3     s3s-fs 0.14.1 (cargo)            keys skyx-test / skyx-test-secret, and a second
#          instance with other keys (skyx-test-b / skyx-test-b-secret): another account
#   Azure  Azurite (npm)                    well-known dev account devstoreaccount1, and a
#          second account skyxsecond with its own key
#   GCS    gcp-storage-emulator (pip)       via deploy/gcs_emulator.py (see its docstring)
#   EC2    moto's server (pip, moto[server]) for the EC2 agent provider (and as an S3 that
#          keeps keys exactly as given)
#   GCE    our contract server deploy/contracts/gce.py (stdlib python; see its docstring),
#          driven by Compute Engine's discovery document compute.v1.json from the pinned
#          google-api-python-client 2.202.0 (pip; revision 20261106, the one
#          docs/cloud-contracts.md cites)
#   ARM    our contract server deploy/contracts/azure.py (stdlib python; see its docstring),
#          driven by Azure's REST API specs vendored in deploy/contracts/azure-specs (SOURCE.md)
#   Ray    two Ray heads (pip ray[default]), each its own cluster, for pipeline stages as Ray
#          jobs: A offers 2 CPUs, B 16 (logical), so a stage asking 8 fits only on B
# and the AWS CLI (pip awscli), the reference the differential tests compare skyx's cp/sync with.
# Usage: deploy/test-servers.sh install | start | stop | env
# `start` writes deploy/.servers/env (the variables the tests read) and waits until every server
# answers; it fails loudly if one cannot be installed or started, so the suite never silently
# skips a backend.
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${SKYX_TOOLS_DIR:-$HOME/.cache/skyx-tools}"
RUN="$PWD/.servers"

log() { echo "test-servers: $*" >&2; }
# Azurite's well-known development key, and the second account's (any base64 will do).
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
AZ_KEY_B='c2t5eC10ZXN0cy1zZWNvbmQtYWNjb3VudC1rZXktbm90LWEtc2VjcmV0LTAwMDA='

install() {
    mkdir -p "$TOOLS"
    # The emulated sky's tests build namespaces and shape links with iproute2's ip and tc.
    # ... and measure its links with ping and iperf3. VMs booted as namespaces
    # (contracts/vmboot.py) run their bootstrap, which needs curl, and nsenter (util-linux);
    # tcpdump sniffs their links.
    if ! command -v tc >/dev/null || ! command -v ip >/dev/null || ! command -v ping >/dev/null \
        || ! command -v iperf3 >/dev/null || ! command -v curl >/dev/null \
        || ! command -v nsenter >/dev/null || ! command -v tcpdump >/dev/null; then
        log "installing iproute2, iputils-ping, iperf3, curl, util-linux, tcpdump (apt)"
        local pkgs="iproute2 iputils-ping iperf3 curl util-linux tcpdump"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q $pkgs >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $pkgs >/dev/null; }
    fi
    if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
        log "installing s3s-fs 0.14.1 (cargo, about 80 s)"
        # 0.15+ needs a newer rustc than this machine's; cargo install is not MSRV-aware.
        cargo install s3s-fs@0.14.1 --features binary --locked --root "$TOOLS" --quiet
    fi
    if [ ! -x "$TOOLS/npm/bin/azurite-blob" ]; then
        log "installing Azurite (npm)"
        npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" -g azurite@3 >/dev/null
    fi
    if [ ! -x "$TOOLS/venv/bin/gcp-storage-emulator" ]; then
        log "installing gcp-storage-emulator (pip)"
        python3 -m venv "$TOOLS/venv"
        "$TOOLS/venv/bin/pip" install --quiet gcp-storage-emulator
    fi
    if [ ! -x "$TOOLS/moto/bin/moto_server" ]; then
        log "installing moto[server] (pip)"
        python3 -m venv "$TOOLS/moto"
        "$TOOLS/moto/bin/pip" install --quiet "moto[server]"
    fi
    # Without the crc32c package moto computes CRC32 where S3 computes CRC32C (its fallback),
    # so every CRC32C it reports for a multipart upload would be wrong.
    if ! "$TOOLS/moto/bin/python" -c "import crc32c" 2>/dev/null; then
        log "installing crc32c into moto's environment (pip)"
        "$TOOLS/moto/bin/pip" install --quiet crc32c
    fi
    if ! "$TOOLS/contracts/bin/pip" show google-api-python-client 2>/dev/null \
        | grep -x 'Version: 2.202.0' >/dev/null; then
        log "installing google-api-python-client 2.202.0 (pip, for its compute.v1.json)"
        python3 -m venv "$TOOLS/contracts"
        "$TOOLS/contracts/bin/pip" install --quiet google-api-python-client==2.202.0
    fi
    # The cloud-init stand-in of VMs booted as namespaces (contracts/vmguest.py) reads YAML.
    if ! "$TOOLS/contracts/bin/python" -c "import yaml" 2>/dev/null; then
        log "installing PyYAML into the contracts' environment (pip)"
        "$TOOLS/contracts/bin/pip" install --quiet pyyaml
    fi
    # Pinned: the Ray code reads its Jobs API's answers (docs/ray-jobs.md).
    if ! "$TOOLS/ray/bin/ray" --version 2>/dev/null | grep -q 'version 2.60.0$'; then
        log "installing Ray 2.60.0 (pip ray[default], about a minute)"
        python3 -m venv "$TOOLS/ray"
        "$TOOLS/ray/bin/pip" install --quiet "ray[default]==2.60.0"
    fi
    if [ ! -x "$TOOLS/awscli/bin/aws" ]; then
        log "installing the AWS CLI (pip awscli)"
        python3 -m venv "$TOOLS/awscli"
        "$TOOLS/awscli/bin/pip" install --quiet awscli
    fi
}

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "$name did not start on port $port; its log:"; cat "$RUN/$name.log" >&2 || true
    return 1
}

# A Ray head of its own, NAME with CPUS logical CPUs: its own free ports and temporary
# directory, and worker ports from WORKERS (two heads share a machine only so; two checkouts
# running their servers at once would share these ranges), a small object store, in its own
# session so `stop` ends its processes and no other Ray's (`ray stop` would end every Ray on
# the machine). Its dashboard port goes to NAME.port.
ray_head() {
    local name=$1 cpus=$2 workers=$3 dash tmp
    dash=$(free_port)
    tmp=$(ray_tmp "$name")
    rm -rf "$tmp"
    echo "$dash" >"$RUN/$name.port"
    setsid "$TOOLS/ray/bin/ray" start --head --block --disable-usage-stats \
        --port "$(free_port)" --dashboard-port "$dash" \
        --dashboard-agent-listen-port "$(free_port)" --ray-client-server-port "$(free_port)" \
        --min-worker-port "$workers" --max-worker-port "$((workers + 999))" \
        --object-store-memory 100000000 \
        --temp-dir "$tmp" --num-cpus "$cpus" --num-gpus 0 >"$RUN/$name.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
}

# A head's temporary directory: Ray's unix sockets live under it, so short, as socket paths
# must be.
ray_tmp() {
    echo "/tmp/skyx-ray-$(echo "$RUN" | sha256sum | head -c 8)-$1"
}

wait_ray() {
    local name=$1 port
    port=$(cat "$RUN/$name.port")
    for _ in $(seq 1 300); do
        if curl -sf --noproxy '*' "http://127.0.0.1:$port/api/version" >/dev/null; then return 0; fi
        sleep 0.2
    done
    log "$name (a Ray head) did not answer on port $port; its log:"; cat "$RUN/$name.log" >&2 || true
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    install
    stop 2>/dev/null || true
    rm -rf "$RUN"; mkdir -p "$RUN/s3" "$RUN/s3b" "$RUN/azurite"
    S3_PORT=$(free_port); S3B_PORT=$(free_port); AZ_PORT=$(free_port); GCS_PORT=$(free_port)
    EC2_PORT=$(free_port); GCE_PORT=$(free_port); ARM_PORT=$(free_port)
    "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port $S3_PORT --access-key skyx-test \
        --secret-key skyx-test-secret "$RUN/s3" >"$RUN/s3s.log" 2>&1 &
    echo $! >"$RUN/s3s.pid"
    "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port $S3B_PORT --access-key skyx-test-b \
        --secret-key skyx-test-b-secret "$RUN/s3b" >"$RUN/s3s-b.log" 2>&1 &
    echo $! >"$RUN/s3s-b.pid"
    # In memory: persisting to disk makes every Azurite write take ~24 ms (measured: 2.3 ms in
    # memory), which turns 10,000-object copies into minutes; the tests never restart it.
    AZURITE_ACCOUNTS="devstoreaccount1:$AZ_KEY;skyxsecond:$AZ_KEY_B" \
        "$TOOLS/npm/bin/azurite-blob" --blobHost 127.0.0.1 --blobPort $AZ_PORT --inMemoryPersistence \
        --loose --skipApiVersionCheck --disableTelemetry >"$RUN/azurite.log" 2>&1 &
    echo $! >"$RUN/azurite.pid"
    # Our launcher: the emulator plus the fixes its docstring documents.
    "$TOOLS/venv/bin/python" "$PWD/gcs_emulator.py" start -H 127.0.0.1 --port $GCS_PORT --in-memory \
        >"$RUN/gcs.log" 2>&1 &
    echo $! >"$RUN/gcs.pid"
    "$TOOLS/moto/bin/moto_server" -H 127.0.0.1 -p $EC2_PORT >"$RUN/moto.log" 2>&1 &
    echo $! >"$RUN/moto.pid"
    # The GCE contract server checks every request against the installed package's document.
    # Its VMs' external addresses are loopback ones (127.77.0.x): nothing boots there, so a
    # provider's hello is refused at once instead of waiting out a connect timeout.
    local gce_doc
    gce_doc=$("$TOOLS/contracts/bin/python" -c 'import googleapiclient, os; print(os.path.join(
        os.path.dirname(googleapiclient.__file__), "discovery_cache/documents/compute.v1.json"))')
    "$TOOLS/contracts/bin/python" "$PWD/contracts/gce.py" --host 127.0.0.1 --port $GCE_PORT \
        --discovery "$gce_doc" --nat-pool 127.77.0.0/24 >"$RUN/gce.log" 2>&1 &
    echo $! >"$RUN/gce.pid"
    # The ARM contract server checks every request against the vendored Azure specs. Its public
    # IP addresses are loopback ones (127.78.0.x): nothing boots there yet, so a provider's
    # connect is refused at once instead of waiting out a connect timeout.
    python3 "$PWD/contracts/azure.py" --host 127.0.0.1 --port $ARM_PORT \
        --specs "$PWD/contracts/azure-specs" --public-ip-pool 127.78.0.0/24 >"$RUN/arm.log" 2>&1 &
    echo $! >"$RUN/arm.pid"
    ray_head ray-a 2 20000
    ray_head ray-b 16 21000
    wait_port $S3_PORT s3s; wait_port $S3B_PORT s3s-b; wait_port $AZ_PORT azurite; wait_port $GCS_PORT gcs; wait_port $EC2_PORT moto
    wait_port $GCE_PORT gce; wait_port $ARM_PORT arm
    wait_ray ray-a; wait_ray ray-b
    cat >"$RUN/env" <<ENV
export SKYX_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export SKYX_TEST_S3_ACCESS_KEY=skyx-test
export SKYX_TEST_S3_SECRET_KEY=skyx-test-secret
export SKYX_TEST_AZURE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZ_KEY;BlobEndpoint=http://127.0.0.1:$AZ_PORT/devstoreaccount1;'
export SKYX_TEST_S3B_ENDPOINT=http://127.0.0.1:$S3B_PORT
export SKYX_TEST_S3B_ACCESS_KEY=skyx-test-b
export SKYX_TEST_S3B_SECRET_KEY=skyx-test-b-secret
export SKYX_TEST_AZURE_B_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=skyxsecond;AccountKey=$AZ_KEY_B;BlobEndpoint=http://127.0.0.1:$AZ_PORT/skyxsecond;'
export SKYX_TEST_GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT
export SKYX_TEST_EC2_ENDPOINT=http://127.0.0.1:$EC2_PORT
export SKYX_TEST_GCE_ENDPOINT=http://127.0.0.1:$GCE_PORT
export SKYX_TEST_AZURE_ARM_ENDPOINT=http://127.0.0.1:$ARM_PORT
export SKYX_TEST_CONTRACTS_PYTHON=$TOOLS/contracts/bin/python
export SKYX_TEST_TOOLS_DIR=$TOOLS
export SKYX_TEST_GCE_DISCOVERY=$gce_doc
export SKYX_TEST_AWS_CLI=$TOOLS/awscli/bin/aws
export SKYX_TEST_RAY_A=http://127.0.0.1:$(cat "$RUN/ray-a.port")
export SKYX_TEST_RAY_B=http://127.0.0.1:$(cat "$RUN/ray-b.port")
ENV
    log "servers up (S3 :$S3_PORT, Azurite :$AZ_PORT, GCS :$GCS_PORT, EC2 :$EC2_PORT, GCE :$GCE_PORT, ARM :$ARM_PORT, Ray :$(cat "$RUN/ray-a.port") :$(cat "$RUN/ray-b.port")); env in $RUN/env"
}

stop() {
    for name in s3s s3s-b azurite gcs moto gce arm; do
        if [ -f "$RUN/$name.pid" ]; then
            kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
            rm -f "$RUN/$name.pid"
        fi
    done
    # A Ray head is a session of processes: all of them go (SIGTERM would drain for 30 s).
    for name in ray-a ray-b; do
        if [ -f "$RUN/$name.pid" ]; then
            kill -KILL -- "-$(cat "$RUN/$name.pid")" 2>/dev/null || true
            rm -f "$RUN/$name.pid"
        fi
    done
}

# The end of each server's log (for a failed run's record), a Ray head's dashboard's too.
logs() {
    local f name
    for f in "$RUN"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f"; tail -n 15 "$f"
    done
    for name in ray-a ray-b; do
        f="$(ray_tmp "$name")/session_latest/logs/dashboard.log"
        [ -f "$f" ] || continue
        echo "--- $f"; tail -n 15 "$f"
    done
}

case "${1:-}" in
    install) install ;;
    logs) logs ;;
    start) start ;;
    stop) stop ;;
    env) cat "$RUN/env" ;;
    *) echo "usage: $0 install|start|stop|env|logs" >&2; exit 2 ;;
esac
