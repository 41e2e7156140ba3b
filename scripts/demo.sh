#!/usr/bin/env bash
# The demo: smd for real, as a Type=notify unit of a real systemd manager, on a real D-Bus and
# journald, inside a private sandbox (scripts/sandbox) that leaves the host untouched.
# Data lives in ./var/demo, started afresh each run so the demo always tells the same story.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ -z "${SMD_SANDBOX_DIR:-}" ]; then
  [ -f dist/bin/smd.js ] || npm run build
  exec scripts/sandbox bash "$0" "$@"
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
smctl() { node "$root/dist/bin/smctl.js" --socket "$SMD_SANDBOX_DIR/run-smd/smd.sock" "$@"; }

rm -rf "$root/var/demo" && mkdir -p "$root/var/demo"
config=$SMD_SANDBOX_DIR/smd.json
cat >"$config" <<JSON
{
  "dataDir": "$root/var/demo",
  "runDir": "$SMD_SANDBOX_DIR/run-smd",
  "systemd": { "bus": "$DBUS_SESSION_BUS_ADDRESS", "unitDir": "$SMD_SANDBOX_UNIT_DIR" }
}
JSON

say "start smd as a Type=notify unit (returns once smd sent READY=1)"
started=$(date +%s%N)
systemd-run --user --unit=smd --quiet -p Type=notify -p NotifyAccess=main -p WatchdogSec=10s -p TimeoutStopSec=30s \
  "$root/dist/bin/smd.js" --config "$config"
echo "ready after $(( ($(date +%s%N) - started) / 1000000 )) ms"
systemctl --user show smd -p ActiveState -p SubState -p StatusText -p MainPID -p WatchdogUSec | sed 's/^/  /'

say "smctl info"
smctl info
say "smctl health"
smctl health || true
say "build the example images (busybox-static, no network)"
node "$root/scripts/images/build.mjs" "$SMD_SANDBOX_DIR/images" >/dev/null
ls "$SMD_SANDBOX_DIR/images"

say "smctl services install hello-http v1 (progress bar on a terminal)"
smctl services install "$SMD_SANDBOX_DIR/images/hello-http-v1.tar"
smctl services ls
say "its page, from its own network namespace behind smd's bridge"
page() {
  local address
  address=$(smctl --json services get hello-http | node -e 'process.stdin.on("data", (d) => process.stdout.write(JSON.parse(d).address))')
  echo "GET http://$address:8080/"
  node "$root/scripts/http-get.mjs" "http://$address:8080/"
}
page
say "smctl services get hello-http (systemd's live view)"
smctl services get hello-http

say "update to v2; then a broken 'v3' that is rolled back"
smctl services install "$SMD_SANDBOX_DIR/images/hello-http-v2.tar"
page
smctl services install --id hello-http --version 3 "$SMD_SANDBOX_DIR/images/failing-v1.tar" || true
smctl services ls
page

say "a second service, its logs from the journal, and the layer store (base layer shared)"
smctl services install "$SMD_SANDBOX_DIR/images/writer-v1.tar"
sleep 2
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

say "stop smd (STOPPING=1, orderly shutdown) and show its journal"
systemctl --user stop smd
journalctl -u smd --no-pager -o cat | tail -n 4
echo "services keep running without smd:"
systemctl --user list-units 'smd-*' --no-legend --plain | sed 's/^/  /'

