#!/usr/bin/env bash
# The demo: smd as it runs on hardware. A device (scripts/device: a Debian 12 root file system
# booted with systemd as PID 1 in a container) with smd installed from its npm package and the
# shipped unit enabled unchanged, no configuration file. Example services are installed,
# updated, rolled back, switched between users, and survive a restart of smd and a power cut.
# Nothing of the host is touched; the device is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ -f dist/bin/smd.js ] || npm run build

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

coproc DEVICE { exec scripts/device --hold; }
device_pid=$DEVICE_PID
exec {to_device}>&"${DEVICE[1]}" {from_device}<&"${DEVICE[0]}"
# Only these two copies stay open, so closing to_device is the end of the device's stdin.
eval "exec ${DEVICE[1]}>&- ${DEVICE[0]}<&-"
cleanup() { exec {to_device}>&-; wait "$device_pid" 2>/dev/null || true; }
trap cleanup EXIT
say "boot a device (the root file system is built once with mmdebstrap, then cached)"
IFS= read -r -u "$from_device" info || { echo "demo: the device did not boot"; exit 1; }
field() { node -e 'const v = JSON.parse(process.argv[1])[process.argv[2]]; if (v === undefined) process.exit(1); process.stdout.write(String(v))' "$1" "$2"; }
pid1=$(field "$info" pid1)
device_root=$(field "$info" root)
path=$(field "$info" path)
echo "booted in $(field "$info" bootMs) ms; its PID 1 is host PID $pid1"
# One command to the device script (power-cut, boot, ...); prints its answer.
device() {
  echo "$1" >&"$to_device"
  local reply; IFS= read -r -u "$from_device" reply
  [ "$(field "$reply" ok 2>/dev/null)" = true ] || { echo "demo: $1 failed: $reply"; exit 1; }
  if p=$(field "$reply" pid1 2>/dev/null); then pid1=$p; echo "booted in $(field "$reply" bootMs) ms"; fi
}
inside() { nsenter -t "$pid1" -a -- env -i PATH="$path" TERM="${TERM:-dumb}" "$@"; }
smctl() { inside smctl "$@"; }

say "on the device: systemd as PID 1, smd started by its shipped unit"
inside systemctl --version | head -1
inside systemctl status smd --no-pager --lines=0 | sed 's/^/  /'
inside systemd-analyze security smd.service --no-pager | tail -1

say "smctl info; smctl health"
smctl info
smctl health || true

say "copy the example images in (built from busybox-static, no network)"
node "$root/scripts/images/build.mjs" "$device_root/opt/images" >/dev/null
cp "$root/scripts/http-get.mjs" "$device_root/opt/http-get.mjs"
ls "$device_root/opt/images"

say "smctl services install hello-http v1 (progress bar on a terminal)"
smctl services install /opt/images/hello-http-v1.tar
smctl services ls
page() {
  local address
  address=$(smctl --json services get hello-http | node -e 'process.stdin.on("data", (d) => process.stdout.write(JSON.parse(d).address))')
  echo "GET http://$address:8080/"
  inside node /opt/http-get.mjs "http://$address:8080/"
}
say "its page, through its own network namespace behind smd's bridge"
page
say "smctl services get hello-http (systemd's live view)"
smctl services get hello-http

say "update to v2; then a broken 'v3' that is rolled back"
smctl services install /opt/images/hello-http-v2.tar
page
smctl services install --id hello-http --version 3 /opt/images/failing-v1.tar || true
smctl services ls
page

say "a second service, its logs from the journal, the layer store (base layer shared), traffic, usage"
smctl services install /opt/images/writer-v1.tar
for _ in $(seq 1 50); do [ "$(smctl --json services logs writer -n 3 | wc -l)" -ge 2 ] && break; sleep 0.1; done
smctl services logs writer -n 3
smctl layers ls
smctl traffic
smctl monitor

say "users: switching claims stops one set of services and starts another"
smctl users set driver-42
smctl users get
smctl services ls
smctl users set
smctl ops ls | head -12

say "systemctl restart smd: the services keep running (same MainPID)"
inside systemctl show -p MainPID smd-hello-http.service
inside systemctl restart smd
inside systemctl show -p MainPID smd-hello-http.service

say "power cut (SIGKILL of the device's PID 1), then boot again"
device power-cut
device boot
smctl services ls
inside systemctl list-units 'smd-*' --no-legend --plain | sed 's/^/  /'
page
