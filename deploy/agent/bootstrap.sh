#!/bin/sh
# The agent's bootstrap on a VM the gateway launched for one job, run as root at boot (by
# cloud-init's runcmd on EC2 and Azure, by the startup script on GCE, whose guest environment
# runs it at every boot: each step may run again). Rendered by the gateway, which fills every
# placeholder. It installs skyx-agent, refusing a binary whose SHA-256 is not the one the
# gateway pinned, finds the address peers reach the VM at (from the cloud's metadata service,
# or as the gateway gave it), and starts the agent under systemd (skyx-agent.service). Any
# step that fails powers the VM off: on EC2 the VM was launched to terminate on shutdown; on
# GCE and Azure a stopped VM runs nothing, and the gateway (or `skyx sweep`) deletes it.
set -u

AGENT=/usr/local/bin/skyx-agent
AGENT_URL='@AGENT_URL@'
AGENT_SHA256='@AGENT_SHA256@'
IMDS=http://169.254.169.254
CLOUD='@CLOUD@'
ADDRESS='@ADDRESS@'

fail() {
    echo "skyx bootstrap: $*" >&2
    logger -t skyx-bootstrap "$*" 2>/dev/null || true
    poweroff
    exit 1
}

# 1. The agent binary: downloaded (beside its final place, moved in only once checked), or
# already in the image.
if [ -n "$AGENT_URL" ]; then
    curl -fsS --retry 5 --retry-connrefused -o "$AGENT.part" "$AGENT_URL" ||
        fail "cannot download the agent from $AGENT_URL"
    CHECK="$AGENT.part"
else
    [ -x "$AGENT" ] || fail "the image has no $AGENT and no download URL was given"
    CHECK="$AGENT"
fi
if [ -n "$AGENT_SHA256" ]; then
    echo "$AGENT_SHA256  $CHECK" | sha256sum -c --status - ||
        fail "$CHECK is not the agent the gateway pinned (sha256 $AGENT_SHA256)"
fi
if [ "$CHECK" != "$AGENT" ]; then
    chmod 0755 "$CHECK" && mv "$CHECK" "$AGENT" || fail "cannot install $AGENT"
fi

# 2. The address peers and the gateway reach this VM at: as the gateway gave it (Azure's
# metadata service names no Standard public address), else the VM's public IPv4 or, should it
# have none, its private one, asked of the cloud's metadata service: on EC2 with an IMDSv2
# session token (the VM is launched with tokens required: IMDSv1 answers nothing), on GCE with
# the Metadata-Flavor header it requires.
if [ -z "$ADDRESS" ]; then
    case "$CLOUD" in
    aws)
        TOKEN=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
            "$IMDS/latest/api/token") || fail "the metadata service gave no IMDSv2 token"
        meta() {
            curl -fsS -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/$1"
        }
        ADDRESS=$(meta public-ipv4) || ADDRESS=$(meta local-ipv4)
        ;;
    gcp)
        meta() {
            curl -fsS -H 'Metadata-Flavor: Google' \
                "$IMDS/computeMetadata/v1/instance/network-interfaces/0/$1"
        }
        ADDRESS=$(meta access-configs/0/external-ip) || ADDRESS=$(meta ip)
        ;;
    esac
    [ -n "$ADDRESS" ] || fail "the metadata service named no address for this VM"
fi

# 3. Start it.
umask 077
printf 'SKYX_AGENT_NAME=%s\nSKYX_ADVERTISE=%s\n' '@NAME@' "$ADDRESS" >/etc/skyx/agent.env ||
    fail "cannot write /etc/skyx/agent.env"
# The VM's managed identity, for Azure stores the job gives no credential of their own.
[ -z '@STORE_IDENTITY@' ] ||
    printf 'SKYX_AZURE_MANAGED_IDENTITY=%s\n' '@STORE_IDENTITY@' >>/etc/skyx/agent.env ||
    fail "cannot write /etc/skyx/agent.env"
systemctl daemon-reload && systemctl enable --now skyx-agent.service ||
    fail "systemd did not start skyx-agent"
