#!/usr/bin/env bash
# Run a real Elasticsearch node on loopback for fleetauth's tests and benchmarks.
#
#   scripts/elasticsearch.sh start  [VERSION]   fetch (Maven), unpack, start, wait for health; prints the URL
#   scripts/elasticsearch.sh ensure [VERSION]   the URL of the running node, starting one if none runs
#   scripts/elasticsearch.sh stop   [VERSION]   stop the node by its PID (TERM, then KILL after 30 s)
#   scripts/elasticsearch.sh kill   [VERSION]   kill -9 the node (fault tests), keeps its data
#   scripts/elasticsearch.sh resume [VERSION]   start the stopped node again on the same ports and data
#   scripts/elasticsearch.sh status [VERSION]   "running <url> pid <pid>" (exit 0) or "stopped" (exit 1)
#   scripts/elasticsearch.sh url    [VERSION]   the URL of the running node (exit 1 if it is not running)
#   scripts/elasticsearch.sh log    [VERSION]   the tail of the node's log
#   scripts/elasticsearch.sh versions           the versions CI tests (newest first)
#   scripts/elasticsearch.sh start-cluster N [VERSION]  N nodes forming one cluster (own HTTP and
#                                               transport ports, fresh data); prints each node's URL
#   scripts/elasticsearch.sh stop-cluster  [VERSION]    stop every node of that cluster
#   scripts/elasticsearch.sh discard [VERSION]  stop the node and delete its folder (tests' own nodes)
#   scripts/elasticsearch.sh discard-cluster [VERSION]  the same for every node of a cluster
#
# VERSION defaults to the first of `versions`. The distribution is Elastic's minimal
# `org.elasticsearch.distribution.integ-test-zip:elasticsearch:<VERSION>:zip`, fetched with
# `mvn dependency:copy` into .elasticsearch/downloads (git-ignored). Each version runs in
# its own folder, .elasticsearch/<VERSION>/ (/tmp/fleetauth-es-<hash>/ when the node's
# user cannot reach the checkout), with its own free HTTP and transport ports
# on 127.0.0.1, a small heap (FLEETAUTH_ES_HEAP, default 512m) and fresh data on every
# `start`. Elasticsearch refuses to run as root: as root the JVM runs as the user
# FLEETAUTH_ES_USER (default `nobody`) through setpriv, with data, logs and tmp owned by
# that user. 9.x needs Java 21+ (Temurin 25 here); 8.x runs on OpenJDK 17.
# FLEETAUTH_ES_INSTANCE=NAME runs a separate node of that version (its own folder
# .elasticsearch/<VERSION>-NAME, ports and data), e.g. one that a fault test may kill.
# A cluster (start-cluster) of instance NAME is the nodes NAME-n1 .. NAME-nN (each
# folder .elasticsearch/<VERSION>-NAME-n<i>; `kill`/`resume`/`status` of one node take
# FLEETAUTH_ES_INSTANCE=NAME-n<i>), named `fleetauth-<VERSION>-NAME`, discovering each
# other through their transport ports on 127.0.0.1, every node master-eligible.
# FLEETAUTH_ES_SETTINGS: extra elasticsearch.yml lines for the node(s) being started
# (e.g. a tiny `thread_pool.write.queue_size` for a test of 429 answers); a key given
# there replaces the default line of that key (e.g. `xpack.security.enabled: true`).
# FLEETAUTH_ES_BOOTSTRAP_PASSWORD: put `bootstrap.password` in the node's keystore (the
# password of the built-in `elastic` user of a node with security on); the health
# checks then authenticate as `elastic`. FLEETAUTH_ES_FILE_ROLES (roles.yml text) and
# FLEETAUTH_ES_FILE_USERS (lines `name:password:role,role`) define roles and users of
# the file realm: this distribution cannot create the `.security` index (its mapping
# needs the analysis-common module, which integ-test-zip lacks), so native users,
# roles and API keys of the cluster are not available on it.
# A node that does not become healthy within FLEETAUTH_ES_START_TIMEOUT seconds (default
# 180) is stopped, its log tail is printed and the script exits non-zero.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
# Newest 9.x and newest 8.x that Maven Central serves as integ-test-zip and that start here
# (tried 2026-12-01: 9.5.6, 9.4.0 and 9.3.0 are not served; 8.19.21 is the newest 8.x listed).
SUPPORTED_VERSIONS=(9.2.4 8.19.21)
HEAP="${FLEETAUTH_ES_HEAP:-512m}"
RUN_USER="${FLEETAUTH_ES_USER:-nobody}"
ROOT="${FLEETAUTH_ES_DIR:-$REPO/.elasticsearch}"
# As root, the node's user must reach its folder: a checkout under e.g. /root is not
# traversable by `nobody`, so the nodes then live in /tmp (one folder per checkout).
if [ -z "${FLEETAUTH_ES_DIR:-}" ] && [ "$(id -u)" -eq 0 ] \
  && ! setpriv --reuid="$RUN_USER" --regid="$(id -g "$RUN_USER" 2>/dev/null || echo 65534)" --clear-groups -- test -x "$REPO" 2>/dev/null; then
  ROOT="/tmp/fleetauth-es-$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"
fi
START_TIMEOUT="${FLEETAUTH_ES_START_TIMEOUT:-180}"

die() { echo "elasticsearch.sh: $*" >&2; exit 1; }

# The folder of one node: per version, and per instance name if one is given.
node_dir() { echo "$ROOT/$1${FLEETAUTH_ES_INSTANCE:+-$FLEETAUTH_ES_INSTANCE}"; }

java_home_for() {
  local major="${1%%.*}" candidate
  if [ "$major" -ge 9 ]; then
    # 9.x needs Java 21 or newer.
    for candidate in "${FLEETAUTH_ES_JAVA_HOME_9:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-21-jdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64; do
      [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && { echo "$candidate"; return; }
    done
    die "Elasticsearch $1 needs Java 21+; none found in /usr/lib/jvm (set FLEETAUTH_ES_JAVA_HOME_9)"
  else
    for candidate in "${FLEETAUTH_ES_JAVA_HOME_8:-}" /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/temurin-25-jdk-amd64; do
      [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && { echo "$candidate"; return; }
    done
    die "Elasticsearch $1 needs Java 17+; none found in /usr/lib/jvm (set FLEETAUTH_ES_JAVA_HOME_8)"
  fi
}

# Runs a command as the unprivileged user when we are root, else as ourselves.
as_node_user() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid="$RUN_USER" --regid="$(id -g "$RUN_USER")" --clear-groups -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

fetch() {
  local version="$1" zip="$ROOT/downloads/elasticsearch-$1.zip"
  [ -s "$zip" ] && return
  mkdir -p "$ROOT/downloads"
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  echo "elasticsearch.sh: fetching org.elasticsearch.distribution.integ-test-zip:elasticsearch:$version:zip through Maven" >&2
  mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    "-Dartifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$version:zip" \
    "-DoutputDirectory=$ROOT/downloads" >&2 \
    || die "Maven could not fetch Elasticsearch $version (integ-test-zip)"
  [ -s "$zip" ] || die "Maven reported success but $zip is missing"
}

unpack() {
  local version="$1" dir
  dir="$(node_dir "$1")"
  [ -x "$dir/dist/bin/elasticsearch" ] && return
  rm -rf "$dir/dist" "$dir/unpack"
  mkdir -p "$dir/unpack"
  unzip -q "$ROOT/downloads/elasticsearch-$version.zip" -d "$dir/unpack"
  mv "$dir/unpack/elasticsearch-$version" "$dir/dist"
  rmdir "$dir/unpack"
}

pid_of() {
  local pidfile
  pidfile="$(node_dir "$1")/run/es.pid"
  [ -s "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

url_of() { echo "http://127.0.0.1:$(cat "$(node_dir "$1")/run/http.port")"; }

log_tail() {
  local dir
  dir="$(node_dir "$1")"
  echo "----- Elasticsearch $1: tail of its logs -----" >&2
  for f in "$dir/run/stdout.log" "$dir/logs/fleetauth-test.log"; do
    [ -f "$f" ] && { echo "== $f" >&2; tail -n 60 "$f" >&2; }
  done
  echo "----- end of Elasticsearch $1 logs -----" >&2
}

write_config() {
  local version="$1" dir http_port transport_port
  dir="$(node_dir "$1")"
  if [ -z "${KEEP_PORTS:-}" ]; then pick_ports "$version"; fi
  http_port="$(cat "$dir/run/http.port")"
  transport_port="$(cat "$dir/run/transport.port")"
  # The distribution's own config folder, copied, so the node's files stay out of dist/.
  rm -rf "$dir/config"
  cp -r "$dir/dist/config" "$dir/config"
  cat >"$dir/config/elasticsearch.yml" <<EOF
cluster.name: ${CLUSTER_NAME:-fleetauth-test}
node.name: fleetauth-test-$version${FLEETAUTH_ES_INSTANCE:+-$FLEETAUTH_ES_INSTANCE}
network.host: 127.0.0.1
http.port: $http_port
transport.port: $transport_port
$(if [ -n "${CLUSTER_SEEDS:-}" ]; then
    echo "discovery.seed_hosts: [$CLUSTER_SEEDS]"
    echo "cluster.initial_master_nodes: [$CLUSTER_MASTERS]"
  else
    echo "discovery.type: single-node"
  fi)
path.data: $dir/data
path.logs: $dir/logs
xpack.security.enabled: false
xpack.ml.enabled: false
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
# Tests give every store its own index prefix (11 indices each).
cluster.max_shards_per_node: 20000
ingest.geoip.downloader.enabled: false
EOF
  # Extra settings replace the defaults of the same keys.
  local line
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    sed -i "/^${line%%:*}:/d" "$dir/config/elasticsearch.yml"
    echo "$line" >>"$dir/config/elasticsearch.yml"
  done <<<"${FLEETAUTH_ES_SETTINGS:-}"
  # The minimal distribution may lack some x-pack modules: drop settings it cannot read.
  if [ ! -d "$dir/dist/modules/x-pack-ml" ]; then sed -i '/^xpack.ml.enabled/d' "$dir/config/elasticsearch.yml"; fi
  if [ ! -d "$dir/dist/modules/x-pack-security" ]; then sed -i '/^xpack.security.enabled/d' "$dir/config/elasticsearch.yml"; fi
  if [ ! -d "$dir/dist/modules/ingest-geoip" ]; then sed -i '/^ingest.geoip/d' "$dir/config/elasticsearch.yml"; fi
  # GC logs and heap dumps into the node's own logs folder, not the working directory.
  sed -i -e "s|file=gc.log|file=$dir/logs/gc.log|" -e "s|-XX:ErrorFile=hs_err_pid%p.log|-XX:ErrorFile=$dir/logs/hs_err_pid%p.log|" "$dir/config/jvm.options"
}

# Chooses two free ports for a node and writes them to its run folder.
pick_ports() {
  local dir http_port transport_port
  dir="$(node_dir "$1")"
  http_port="$(free_port)"
  transport_port="$(free_port)"
  while [ "$transport_port" = "$http_port" ]; do transport_port="$(free_port)"; done
  mkdir -p "$dir/run"
  echo "$http_port" >"$dir/run/http.port"
  echo "$transport_port" >"$dir/run/transport.port"
}

# The instance names of the nodes of cluster $FLEETAUTH_ES_INSTANCE that exist here.
cluster_members() {
  local base="${FLEETAUTH_ES_INSTANCE:-cluster}" d
  for d in "$ROOT/$1-$base-n"*; do
    [ -d "$d" ] && echo "${d##*/$1-}"
  done
  return 0
}

start_cluster() {
  local n="$1" version="$2" base="${FLEETAUTH_ES_INSTANCE:-cluster}" i seeds="" masters="" member
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "start-cluster needs a node count (e.g. start-cluster 3)"
  stop_cluster "$version"
  fetch "$version"
  for i in $(seq 1 "$n"); do
    member="$base-n$i"
    FLEETAUTH_ES_INSTANCE="$member" unpack "$version"
    FLEETAUTH_ES_INSTANCE="$member" pick_ports "$version"
    seeds="$seeds${seeds:+, }\"127.0.0.1:$(cat "$ROOT/$version-$member/run/transport.port")\""
    masters="$masters${masters:+, }\"fleetauth-test-$version-$member\""
  done
  for i in $(seq 1 "$n"); do
    member="$base-n$i"
    FLEETAUTH_ES_INSTANCE="$member" KEEP_PORTS=1 CLUSTER_SEEDS="$seeds" CLUSTER_MASTERS="$masters" \
      CLUSTER_NAME="fleetauth-$version-$base" write_config "$version"
    rm -rf "$ROOT/$version-$member/data" "$ROOT/$version-$member/logs" "$ROOT/$version-$member/tmp"
  done
  # Together: each node waits for the others to form the cluster.
  local pids=() failed=0 pid
  for i in $(seq 1 "$n"); do
    FLEETAUTH_ES_INSTANCE="$base-n$i" launch "$version" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" -eq 0 ] || { stop_cluster "$version"; die "a node of cluster $base did not start"; }
  local url deadline
  url="$(FLEETAUTH_ES_INSTANCE="$base-n1" url_of "$version")"
  deadline=$(($(date +%s) + START_TIMEOUT))
  until curl -fsS -m 10 "$url/_cluster/health?wait_for_nodes=$n&wait_for_status=green&timeout=5s" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      for i in $(seq 1 "$n"); do FLEETAUTH_ES_INSTANCE="$base-n$i" log_tail "$version"; done
      stop_cluster "$version"
      die "cluster $base ($n nodes of $version) did not form within ${START_TIMEOUT}s"
    fi
    sleep 1
  done
  echo "elasticsearch.sh: cluster $base of $n nodes of Elasticsearch $version is green" >&2
  for i in $(seq 1 "$n"); do FLEETAUTH_ES_INSTANCE="$base-n$i" url_of "$version"; done
}

stop_cluster() {
  local version="$1" member
  for member in $(cluster_members "$version"); do
    FLEETAUTH_ES_INSTANCE="$member" stop "$version" 2>/dev/null || true
  done
}

# Security material of a node with security on: `bootstrap.password` in its keystore
# (FLEETAUTH_ES_BOOTSTRAP_PASSWORD), file-realm roles and users.
write_security() {
  local version="$1" dir java_home line name rest password roles
  [ -n "${FLEETAUTH_ES_BOOTSTRAP_PASSWORD:-}${FLEETAUTH_ES_FILE_USERS:-}${FLEETAUTH_ES_FILE_ROLES:-}" ] || return 0
  dir="$(node_dir "$1")"
  java_home="$(java_home_for "$version")"
  mkdir -p "$dir/tmp"
  [ "$(id -u)" -ne 0 ] || chown -R "$RUN_USER" "$dir/config" "$dir/tmp"
  es_tool() {
    as_node_user env -i PATH=/usr/bin:/bin HOME="$dir/tmp" \
      ES_JAVA_HOME="$java_home" ES_PATH_CONF="$dir/config" ES_TMPDIR="$dir/tmp" "$dir/dist/bin/$@" \
      >>"$dir/run/security.log" 2>&1 \
      || { cat "$dir/run/security.log" >&2; die "$1 failed for Elasticsearch $version"; }
  }
  if [ -n "${FLEETAUTH_ES_BOOTSTRAP_PASSWORD:-}" ]; then
    rm -f "$dir/config/elasticsearch.keystore"
    printf '%s\n' "$FLEETAUTH_ES_BOOTSTRAP_PASSWORD" | es_tool elasticsearch-keystore add -x -f bootstrap.password
  fi
  if [ -n "${FLEETAUTH_ES_FILE_ROLES:-}" ]; then
    printf '%s\n' "$FLEETAUTH_ES_FILE_ROLES" >>"$dir/config/roles.yml"
  fi
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    name="${line%%:*}" rest="${line#*:}"
    password="${rest%%:*}" roles="${rest#*:}"
    es_tool elasticsearch-users useradd "$name" -p "$password" -r "$roles"
  done <<<"${FLEETAUTH_ES_FILE_USERS:-}"
}

# curl options that authenticate the health checks on a node with security on.
health_auth() {
  if [ -n "${FLEETAUTH_ES_BOOTSTRAP_PASSWORD:-}" ]; then
    printf '%s\n' -u "elastic:$FLEETAUTH_ES_BOOTSTRAP_PASSWORD"
  fi
}

launch() {
  local version="$1" dir java_home
  dir="$(node_dir "$1")"
  java_home="$(java_home_for "$version")"
  mkdir -p "$dir/data" "$dir/logs" "$dir/tmp" "$dir/run"
  rm -f "$dir/run/es.pid"
  if [ "$(id -u)" -eq 0 ]; then
    id "$RUN_USER" >/dev/null 2>&1 || die "user $RUN_USER does not exist (set FLEETAUTH_ES_USER)"
    chown -R "$RUN_USER" "$dir/data" "$dir/logs" "$dir/tmp" "$dir/run" "$dir/config"
    # Every folder above the node's must be traversable by that user.
    as_node_user test -r "$dir/dist/bin/elasticsearch" \
      || die "$RUN_USER cannot read $dir (set FLEETAUTH_ES_DIR to a folder it can reach, e.g. /tmp/fleetauth-es)"
  fi
  # -d -p: the node daemonizes itself once it has started and writes its PID.
  (
    cd "$dir"
    as_node_user env -i PATH=/usr/bin:/bin HOME="$dir/tmp" \
      ES_JAVA_HOME="$java_home" ES_PATH_CONF="$dir/config" ES_TMPDIR="$dir/tmp" \
      ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP -XX:ActiveProcessorCount=2" \
      "$dir/dist/bin/elasticsearch" -d -p "$dir/run/es.pid" >"$dir/run/stdout.log" 2>&1
  ) || { log_tail "$version"; die "Elasticsearch $version did not start (see the log tail above)"; }
}

wait_healthy() {
  local version="$1" url deadline
  url="$(url_of "$version")"
  deadline=$(($(date +%s) + START_TIMEOUT))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if curl -fsS -m 5 $(health_auth) "$url/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1; then
      return 0
    fi
    if [ -s "$(node_dir "$version")/run/es.pid" ] && ! pid_of "$version" >/dev/null; then
      log_tail "$version"
      die "Elasticsearch $version exited during startup (see the log tail above)"
    fi
    sleep 1
  done
  log_tail "$version"
  stop "$version" || true
  die "Elasticsearch $version was not healthy at $url within ${START_TIMEOUT}s (see the log tail above)"
}

stop() {
  local version="$1" pid i
  pid="$(pid_of "$version")" || { echo "elasticsearch.sh: $version is not running" >&2; return 0; }
  kill -TERM "$pid"
  for i in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$(node_dir "$version")/run/es.pid"; return 0; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(node_dir "$version")/run/es.pid"
}

cmd="${1:-}"
version="${2:-${SUPPORTED_VERSIONS[0]}}"
case "$cmd" in
  start)
    if pid_of "$version" >/dev/null; then stop "$version"; fi
    fetch "$version"
    unpack "$version"
    write_config "$version"
    rm -rf "$(node_dir "$version")/data" "$(node_dir "$version")/logs" "$(node_dir "$version")/tmp"
    write_security "$version"
    launch "$version"
    wait_healthy "$version"
    echo "elasticsearch.sh: Elasticsearch $version healthy at $(url_of "$version") (pid $(pid_of "$version"))" >&2
    url_of "$version"
    ;;
  ensure)
    if pid_of "$version" >/dev/null && curl -fsS -m 5 "$(url_of "$version")/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1; then
      url_of "$version"
    else
      exec "$0" start "$version"
    fi
    ;;
  resume)
    pid_of "$version" >/dev/null && { url_of "$version"; exit 0; }
    [ -f "$(node_dir "$version")/run/http.port" ] || die "Elasticsearch $version was never started here"
    launch "$version"
    wait_healthy "$version"
    url_of "$version"
    ;;
  stop) stop "$version" ;;
  kill)
    pid="$(pid_of "$version")" || die "Elasticsearch $version is not running"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    ;;
  status)
    if pid="$(pid_of "$version")"; then echo "running $(url_of "$version") pid $pid"; else echo "stopped"; exit 1; fi
    ;;
  url) pid_of "$version" >/dev/null || die "Elasticsearch $version is not running"; url_of "$version" ;;
  log) log_tail "$version" 2>&1 ;;
  versions) printf '%s\n' "${SUPPORTED_VERSIONS[@]}" ;;
  start-cluster)
    n="${2:-}"
    version="${3:-${SUPPORTED_VERSIONS[0]}}"
    start_cluster "$n" "$version"
    ;;
  stop-cluster) stop_cluster "$version" ;;
  discard)
    stop "$version"
    [ -n "${FLEETAUTH_ES_INSTANCE:-}" ] || die "discard is for a named instance (FLEETAUTH_ES_INSTANCE)"
    rm -rf "$(node_dir "$version")"
    ;;
  discard-cluster)
    for member in $(cluster_members "$version"); do
      FLEETAUTH_ES_INSTANCE="$member" stop "$version" 2>/dev/null || true
      rm -rf "$ROOT/$version-$member"
    done
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
