#!/bin/sh
# The `startup-script` metadata of a GCE agent VM (rendered by the gateway, which fills every
# placeholder). GCE's Debian images have no cloud-init: their guest environment runs this
# script as root at every boot. It writes what cloud-init's user data writes on EC2 (the
# launch token, the gateway's certificate, the systemd unit, the bootstrap) and runs the
# bootstrap; writing the same files again at a second boot is harmless.
set -u
fail() {
    echo "skyx startup: $*" >&2
    poweroff
    exit 1
}
umask 077
# (0755: the agent runs as a dynamic user and reads the certificate there; the token stays
# 0600, handed over by systemd as a credential.)
mkdir -p -m 0755 /etc/skyx || fail "cannot make /etc/skyx"
printf '%s' '@TOKEN@' >/etc/skyx/token || fail "cannot write the token"
echo '@GATEWAY_CERT_B64@' | base64 -d >/etc/skyx/gateway.der || fail "cannot write the certificate"
echo '@SERVICE_B64@' | base64 -d >/etc/systemd/system/skyx-agent.service ||
    fail "cannot write the unit"
echo '@BOOTSTRAP_B64@' | base64 -d >/etc/skyx/bootstrap.sh || fail "cannot write the bootstrap"
chmod 0644 /etc/skyx/gateway.der /etc/systemd/system/skyx-agent.service
exec sh /etc/skyx/bootstrap.sh
