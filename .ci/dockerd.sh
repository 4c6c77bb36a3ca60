#!/usr/bin/env bash
# A private dockerd for the registrator tests: `.ci/dockerd.sh start|stop|status`.
#
# It installs nothing (CI's apt list brings docker.io and busybox-static). As root it starts dockerd on
# its own unix socket, with its own data-root, exec-root, pidfile, config file and bridge, and no TCP
# listener, so it never touches a system dockerd or /var/run/docker.sock. Published ports go through
# docker-proxy (--iptables=false: no host firewall rules are added). Once the daemon answers it
# imports `busybox:latest` built from the busybox-static binary (no registry is needed).
#
# Tests find the daemon through BEACON_TEST_DOCKER_HOST (printed by `start`) or by probing
# $BEACON_DOCKERD_DIR/docker.sock.
set -euo pipefail

DIR="${BEACON_DOCKERD_DIR:-/tmp/beacon-dockerd}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
BRIDGE="${BEACON_DOCKERD_BRIDGE:-beacon-d0}"
BRIDGE_CIDR="${BEACON_DOCKERD_CIDR:-10.213.47.1/24}"
DOCKER="${DOCKER_CLI:-$(command -v docker || echo /usr/local/bin/docker)}"
WAIT_SECONDS="${BEACON_DOCKERD_WAIT:-60}"

say() { echo "dockerd.sh: $*" >&2; }

docker_cli() { DOCKER_HOST="unix://$SOCK" "$DOCKER" "$@"; }

answers() { timeout 5 env DOCKER_HOST="unix://$SOCK" "$DOCKER" info >/dev/null 2>&1; }

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

make_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

make_image() {
  if docker_cli image inspect busybox:latest >/dev/null 2>&1; then
    return 0
  fi
  local bb rootfs
  bb="$(command -v busybox || true)"
  if [ -z "$bb" ] || ! file -L "$bb" 2>/dev/null | grep -q "statically linked"; then
    # `file` may be absent: fall back to ldd's verdict.
    if [ -z "$bb" ] || ldd "$bb" >/dev/null 2>&1; then
      say "need a static busybox (apt-get install busybox-static)"
      return 1
    fi
  fi
  rootfs="$(mktemp -d "$DIR/rootfs.XXXXXX")"
  mkdir -p "$rootfs"/{bin,sbin,etc,tmp,proc,sys,dev,root,var/www}
  cp "$bb" "$rootfs/bin/busybox"
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
  echo "root:x:0:" >"$rootfs/etc/group"
  echo "beacon registrator test page" >"$rootfs/var/www/index.html"
  chmod 1777 "$rootfs/tmp"
  tar -C "$rootfs" -cf - . | docker_cli import \
    --change 'CMD ["sh"]' --change 'ENV PATH=/bin:/sbin' - busybox:latest >/dev/null
  rm -rf "$rootfs"
}

start() {
  if [ "$(id -u)" != 0 ]; then
    say "must run as root"; return 1
  fi
  command -v dockerd >/dev/null || { say "dockerd not installed (apt-get install docker.io)"; return 1; }
  mkdir -p "$DIR"
  if running_pid >/dev/null; then
    say "already running (pid $(running_pid))"
  else
    [ -S "$SOCK" ] && rm -f "$SOCK"
    make_bridge
    echo '{}' >"$DIR/daemon.json"
    # setsid: the daemon outlives this script and ignores the caller's terminal signals.
    setsid dockerd \
      --config-file "$DIR/daemon.json" \
      --host "unix://$SOCK" \
      --data-root "$DIR/data" \
      --exec-root "$DIR/exec" \
      --pidfile "$PIDFILE" \
      --bridge "$BRIDGE" \
      --iptables=false --ip-forward=false --ip-masq=false --ip6tables=false \
      --userland-proxy=true \
      --log-level warn \
      ${BEACON_DOCKERD_STORAGE:+--storage-driver "$BEACON_DOCKERD_STORAGE"} \
      </dev/null >"$LOG" 2>&1 &
  fi
  local deadline=$((SECONDS + WAIT_SECONDS))
  until answers; do
    if [ $SECONDS -ge $deadline ]; then
      say "dockerd did not answer on unix://$SOCK within ${WAIT_SECONDS}s; last log lines:"
      tail -n 20 "$LOG" >&2 || true
      stop || true
      return 1
    fi
    if [ -f "$PIDFILE" ] && ! running_pid >/dev/null; then
      say "dockerd exited; last log lines:"; tail -n 20 "$LOG" >&2 || true; return 1
    fi
    sleep 0.2
  done
  make_image
  echo "BEACON_TEST_DOCKER_HOST=unix://$SOCK"
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    # Containers first (they are only ours: this daemon has its own data-root).
    local ids
    ids="$(timeout 20 env DOCKER_HOST="unix://$SOCK" "$DOCKER" ps -aq 2>/dev/null || true)"
    [ -n "$ids" ] && timeout 60 env DOCKER_HOST="unix://$SOCK" "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "dockerd (pid $pid) ignored SIGTERM for 30s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$SOCK" "$PIDFILE"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE" || true
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running_pid >/dev/null && answers; then echo "running: unix://$SOCK"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
