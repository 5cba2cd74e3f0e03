# nats-server for the NATS-mode tests: sourced by scripts/test
# (run_step "..." source scripts/lib/ensure-nats.sh).
# The tests start their own 3-node JetStream clusters on free loopback ports
# (server/tests/support_nats), so only the binary is needed here: Debian's
# `nats-server` is installed when missing. Exports TIDINGS_TEST_NATS_SERVER
# (the binary the tests run).
# shellcheck shell=bash
command -v nats-server >/dev/null || apt_install nats-server
TIDINGS_TEST_NATS_SERVER="$(command -v nats-server)" || die "nats-server is not on PATH after installing it"
export TIDINGS_TEST_NATS_SERVER
note "using $("$TIDINGS_TEST_NATS_SERVER" --version) at $TIDINGS_TEST_NATS_SERVER"
