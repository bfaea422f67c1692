#!/bin/sh
# The agent's bootstrap on a VM the gateway launched for one job, run once as root at first
# boot (cloud-init's runcmd; rendered by the gateway, which fills every placeholder). It installs
# skyx-agent, refusing a binary whose SHA-256 is not the one the gateway pinned, finds the
# address peers reach the VM at from the instance metadata service, and starts the agent
# under systemd (skyx-agent.service). Any step that fails powers the VM off, and the VM was
# launched to terminate on shutdown: a VM that cannot run the agent it was asked to run is
# gone, never left running something else.
set -u

AGENT=/usr/local/bin/skyx-agent
AGENT_URL='@AGENT_URL@'
AGENT_SHA256='@AGENT_SHA256@'
IMDS=http://169.254.169.254

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

# 2. The address peers and the gateway reach this VM at: its public IPv4, else its private
# one (should the VM have no public address), asked of the metadata service with an IMDSv2
# session token (the VM is launched with tokens required: IMDSv1 answers nothing).
TOKEN=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
    "$IMDS/latest/api/token") || fail "the metadata service gave no IMDSv2 token"
meta() {
    curl -fsS -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/$1"
}
ADDRESS=$(meta public-ipv4) || ADDRESS=$(meta local-ipv4) ||
    fail "the metadata service named no address for this VM"

# 3. Start it.
umask 077
printf 'SKYX_AGENT_NAME=%s\nSKYX_ADVERTISE=%s\n' '@NAME@' "$ADDRESS" >/etc/skyx/agent.env ||
    fail "cannot write /etc/skyx/agent.env"
systemctl daemon-reload && systemctl enable --now skyx-agent.service ||
    fail "systemd did not start skyx-agent"
