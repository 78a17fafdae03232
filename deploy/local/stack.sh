#!/usr/bin/env bash
# The local rfm-stream stack without Docker: one Apache Kafka broker (KRaft) run from the
# official Maven Central jars with the machine's JDK, and the machine's redis-server.
# Run `deploy/local/stack.sh --help` for usage.
set -euo pipefail

SCRIPT_DIR=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd -P -- "$SCRIPT_DIR/../.." && pwd)
SELF="deploy/local/stack.sh"
POM="$SCRIPT_DIR/pom.xml"

usage() {
  cat <<EOF
Usage: $SELF COMMAND [SERVICE] [OPTIONS]

Runs the local development stack of rfm-stream without Docker: one Apache Kafka broker
(KRaft mode, broker and controller in one JVM, started from the official jars on Maven
Central with this machine's JDK) and one Redis server (this machine's redis-server).

Next to the plain endpoints (the default for rfm-stream) it always runs secured ones, to test
clients configured like production: the same broker also listens with SASL_SSL (TLS +
SCRAM-SHA-512, user "rfm"), and a second, TLS-only Redis lets in only the user "rfm" with its
password (no anonymous access). The CA, server certificate and passwords are throwaway ones
generated at the first start (see Files, and env --secure).

Commands
  start    Start the service(s) and wait until they answer (Kafka: a metadata request;
           Redis: PING). Already running and healthy: says so, exits 0.
           On first use it downloads the Kafka jars with Maven into the cache, installs
           redis-server (and kcat, optional) with apt-get if they are missing, and generates
           the TLS files and passwords of the secured endpoints with openssl.
           A broker started by an older stack.sh (no SASL_SSL listener) is left running; a
           warning says to restart it.
  stop     Stop the service(s): SIGTERM, wait up to \$RFM_STOP_TIMEOUT s (30), then SIGKILL.
           Already stopped: exits 0.
  status   Print state, address, pid and log file of each service and secured endpoint
           (SASL_SSL healthy: a TLS handshake verified against the CA; Redis TLS healthy:
           redis-cli logs in as "rfm" over TLS and gets PONG). Exits 0 only
           if every requested service and endpoint is running and healthy.
  wipe     Stop the service(s) and delete their data, logs and remembered ports (redis:
           both Redis servers). The TLS files and passwords go with the last service wiped.
           The jar cache is kept.
  env      Print the connection settings of the running stack (the content of
           .local/stack.env): RFM_KAFKA_BOOTSTRAP=... and RFM_REDIS_URL=..., and the
           secured endpoints as RFM_SECURE_*=... (which rfm-stream itself does not read).
           With --export, prefix each line with "export " for: eval "\$($SELF env --export)"
           With --secure, print instead the rfm-stream settings for the secured endpoints
           (RFM_KAFKA_SECURITY_PROTOCOL=SASL_SSL, RFM_KAFKA_SASL_*, RFM_KAFKA_SSL_CAFILE,
           RFM_REDIS_URL=rediss://..., RFM_REDIS_PASSWORD, RFM_REDIS_SSL_CAFILE), e.g.
               eval "\$($SELF env --secure --export)"; rfm-stream health
  logs     Print the last lines of the log file(s); -f follows them, -n N sets the count.

Service
  kafka | redis | all      Default: all. Example: $SELF stop kafka

Options
  -f, --follow             logs: keep following the files (Ctrl-C to end)
  -n, --lines N            logs: how many lines to show (default 100)
      --export             env: print "export KEY=VALUE" lines
      --secure             env: the rfm-stream settings for the secured endpoints
  -h, --help               This text.

Ports
  Kafka listens on 127.0.0.1:9092 (PLAINTEXT) and 127.0.0.1:9094 (SASL_SSL), its KRaft
  controller on 127.0.0.1:9093, Redis on 127.0.0.1:6379 and the TLS Redis on 127.0.0.1:6380.
  A port held by another program is not taken: the stack picks a free one (default + 10000
  and up) and says so. The ports chosen are remembered and reused on the next start, so
  clients keep working across stop/start. Set RFM_KAFKA_PORT, RFM_KAFKA_CONTROLLER_PORT,
  RFM_KAFKA_SASL_SSL_PORT, RFM_REDIS_PORT or RFM_REDIS_TLS_PORT to insist on a port (start
  fails if it is taken).
  The ports in use are always in .local/stack.env, e.g.
      RFM_KAFKA_BOOTSTRAP=127.0.0.1:9092
      RFM_REDIS_URL=redis://127.0.0.1:6379/0
      RFM_SECURE_CAFILE=<local dir>/secure/ca.pem
      RFM_SECURE_KAFKA_BOOTSTRAP=127.0.0.1:9094
      RFM_SECURE_KAFKA_SECURITY_PROTOCOL=SASL_SSL
      RFM_SECURE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
      RFM_SECURE_KAFKA_USERNAME=rfm
      RFM_SECURE_KAFKA_PASSWORD=<generated>
      RFM_SECURE_REDIS_URL=rediss://rfm@127.0.0.1:6380/0
      RFM_SECURE_REDIS_PASSWORD=<generated>
  which every rfm-stream command, the worker and the tests read (the RFM_SECURE_* lines
  only the security tests; rfm-stream uses the plain endpoints unless told otherwise).

Files
  \$RFM_LOCAL_DIR (default <repo>/.local; now $(local_dir_display))
      stack.env                  connection settings (see env)
      kafka/server.properties    rendered from deploy/local/kafka/server.properties
      kafka/data/                Kafka log segments and KRaft metadata
      kafka/cluster.id           KRaft cluster id, generated once
      kafka/scram-user.sha256    marks the SCRAM user as created for this data and password
      kafka/kafka.pid, redis/redis.pid, redis-tls/redis.pid
      redis/redis.conf           rendered from deploy/local/redis/redis.conf
      redis/                     Redis append-only file and snapshot
      redis-tls/redis.conf       rendered from deploy/local/redis/redis-tls.conf (no data kept)
      secure/ca.pem, ca.key      throwaway CA (10 years; kept while valid)
      secure/server.pem, server.key, server-keystore.pem
                                 server certificate for 127.0.0.1 and localhost (825 days)
      secure/kafka.password, redis.password
                                 passwords of the user "rfm" (mode 0600)
      logs/kafka.log             broker log (log4j2: deploy/local/kafka/log4j2.yaml)
      logs/kafka.out             JVM stdout/stderr (crashes, JVM errors)
      logs/redis.log, logs/redis-tls.log   Redis logs
  \$RFM_CACHE_DIR (default ~/.cache/rfm-stream)
      kafka-<version>/libs       broker jars; the version is pinned in deploy/local/pom.xml

Environment
  RFM_LOCAL_DIR, RFM_CACHE_DIR          see Files
  RFM_KAFKA_PORT, RFM_KAFKA_CONTROLLER_PORT, RFM_KAFKA_SASL_SSL_PORT,
  RFM_REDIS_PORT, RFM_REDIS_TLS_PORT    see Ports
  RFM_KAFKA_HEAP_OPTS                   JVM heap flags (default "-Xms256m -Xmx1g")
  RFM_KAFKA_START_TIMEOUT               seconds to wait for Kafka to answer (default 90)
  RFM_REDIS_START_TIMEOUT               seconds to wait for Redis to answer (default 30)
  RFM_STOP_TIMEOUT                      seconds between SIGTERM and SIGKILL (default 30)

Needs: Linux, bash, a JDK 17+ (java) and Maven (mvn) for the first download; redis-server,
openssl and kcat are installed with apt-get (as root or with sudo) when missing.
EOF
}

# ----------------------------------------------------------------------------------------
# Messages

say() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: warning: %s\n' "$*" >&2; }
die() {
  printf 'stack: error: %s\n' "$*" >&2
  exit 1
}

# Paths in messages: relative to the repository when inside it, so they can be pasted there.
show_path() {
  local path=$1
  if [[ $path == "$REPO_DIR"/* ]]; then
    printf '%s' "${path#"$REPO_DIR"/}"
  else
    printf '%s' "$path"
  fi
}

local_dir_display() { show_path "$LOCAL_DIR"; }

# ----------------------------------------------------------------------------------------
# Layout

absolute() {
  if [[ $1 == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$PWD" "$1"; fi
}

LOCAL_DIR=$(absolute "${RFM_LOCAL_DIR:-$REPO_DIR/.local}")
CACHE_DIR=$(absolute "${RFM_CACHE_DIR:-${HOME:-$LOCAL_DIR}/.cache/rfm-stream}")
LOG_DIR="$LOCAL_DIR/logs"
STACK_ENV="$LOCAL_DIR/stack.env"
LOCK_FILE="$LOCAL_DIR/.stack.lock"

KAFKA_DIR="$LOCAL_DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_CONF="$KAFKA_DIR/server.properties"
KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
KAFKA_LOG="$LOG_DIR/kafka.log"
KAFKA_OUT="$LOG_DIR/kafka.out"
KAFKA_TEMPLATE="$SCRIPT_DIR/kafka/server.properties"
KAFKA_LOG4J="$SCRIPT_DIR/kafka/log4j2.yaml"

REDIS_DIR="$LOCAL_DIR/redis"
REDIS_CONF="$REDIS_DIR/redis.conf"
REDIS_PID_FILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"
REDIS_TEMPLATE="$SCRIPT_DIR/redis/redis.conf"

# The secured endpoints: Kafka's SASL_SSL listener (same broker) and a TLS-only Redis with
# passwords (a second redis-server), with a throwaway CA, server certificate and passwords.
SECURE_DIR="$LOCAL_DIR/secure"
CA_CERT="$SECURE_DIR/ca.pem"
CA_KEY="$SECURE_DIR/ca.key"
SERVER_CERT="$SECURE_DIR/server.pem"
SERVER_KEY="$SECURE_DIR/server.key"
SERVER_KEYSTORE="$SECURE_DIR/server-keystore.pem"
KAFKA_PASSWORD_FILE="$SECURE_DIR/kafka.password"
REDIS_PASSWORD_FILE="$SECURE_DIR/redis.password"
SECURE_USER=rfm
SCRAM_MECHANISM=SCRAM-SHA-512
KAFKA_SCRAM_MARKER="$KAFKA_DIR/scram-user.sha256"

REDIS_TLS_DIR="$LOCAL_DIR/redis-tls"
REDIS_TLS_CONF="$REDIS_TLS_DIR/redis.conf"
REDIS_TLS_PID_FILE="$REDIS_TLS_DIR/redis.pid"
REDIS_TLS_LOG="$LOG_DIR/redis-tls.log"
REDIS_TLS_TEMPLATE="$SCRIPT_DIR/redis/redis-tls.conf"

DEFAULT_KAFKA_PORT=9092
DEFAULT_CONTROLLER_PORT=9093
DEFAULT_SASL_SSL_PORT=9094
DEFAULT_REDIS_PORT=6379
DEFAULT_REDIS_TLS_PORT=6380

KAFKA_START_TIMEOUT=${RFM_KAFKA_START_TIMEOUT:-90}
REDIS_START_TIMEOUT=${RFM_REDIS_START_TIMEOUT:-30}
STOP_TIMEOUT=${RFM_STOP_TIMEOUT:-30}
KAFKA_HEAP_OPTS=${RFM_KAFKA_HEAP_OPTS:-"-Xms256m -Xmx1g"}

# ----------------------------------------------------------------------------------------
# Small helpers

now_ms() {
  local s=${EPOCHREALTIME//[.,]/}
  printf '%s' "${s:0:${#s}-3}"
}

elapsed_since() {
  local start=$1 ms
  ms=$(($(now_ms) - start))
  printf '%d.%01d s' $((ms / 1000)) $(((ms % 1000) / 100))
}

have() { command -v "$1" >/dev/null 2>&1; }

# The lock serialises start/stop/wipe (two test sessions may start the stack at once).
# Long-running children are started with 9>&- so that they do not inherit and keep it.
take_lock() {
  mkdir -p "$LOCAL_DIR"
  exec 9>"$LOCK_FILE"
  if ! flock -w 600 9; then
    die "another $SELF has held $(show_path "$LOCK_FILE") for 10 minutes; is one stuck?"
  fi
}

# Run a command as root: directly, or with sudo (non-interactively unless on a terminal).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif have sudo; then
    if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
  else
    return 1
  fi
}

apt_install() {
  if ! have apt-get; then
    return 1
  fi
  say "installing $* with apt-get ..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Liveness of a pid that is not a zombie (a container whose init does not reap children
# leaves killed processes as zombies).
pid_alive() {
  local pid=$1 stat
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# ----------------------------------------------------------------------------------------
# Ports

valid_port() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

port_in_use() {
  (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Who holds a port, when the system can tell (ss from iproute2; other users' processes need root).
port_holder() {
  local port=$1 line
  if have ss; then
    line=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n1 || true)
    if [[ -n $line ]]; then
      line=${line#users:((\"}
      printf '%s (pid %s)' "${line%%\"*}" "${line##*pid=}"
      return
    fi
  fi
  printf 'another program'
}

# Prints the first free port from $1 upwards that is not among the other arguments.
free_port_from() {
  local port=$1 taken other
  shift
  while ((port <= 65535)); do
    taken=0
    for other in "$@"; do
      [[ $other == "$port" ]] && taken=1
    done
    if ((taken == 0)) && ! port_in_use "$port"; then
      printf '%s' "$port"
      return 0
    fi
    port=$((port + 1))
  done
  return 1
}

# choose_port LABEL ENV_NAME DEFAULT REMEMBERED [PORTS_ALREADY_CHOSEN...]
# An explicit RFM_*_PORT is a requirement; otherwise the remembered port, then the default,
# then a free one above default+10000.
choose_port() {
  local label=$1 env_name=$2 default=$3 remembered=$4 candidate taken other
  shift 4
  local explicit=${!env_name:-}
  if [[ -n $explicit ]]; then
    valid_port "$explicit" || die "$env_name=$explicit is not a port number"
    if port_in_use "$explicit"; then
      die "$label: $env_name=$explicit, but that port is in use by $(port_holder "$explicit"); choose another port or unset $env_name"
    fi
    printf '%s' "$explicit"
    return
  fi
  for candidate in "$remembered" "$default"; do
    valid_port "$candidate" || continue
    taken=0
    for other in "$@"; do
      [[ $other == "$candidate" ]] && taken=1
    done
    if ((taken == 0)) && ! port_in_use "$candidate"; then
      printf '%s' "$candidate"
      return
    fi
  done
  candidate=$(free_port_from $((default + 10000)) "$@") || die "$label: no free port found"
  say "$label: port $default is in use by $(port_holder "$default"); using $candidate instead (see $(show_path "$STACK_ENV"))" >&2
  printf '%s' "$candidate"
}

# ----------------------------------------------------------------------------------------
# stack.env: the one file clients read to find the stack

# set_stack_env KEY VALUE — replace or add one line, atomically.
set_stack_env() {
  local key=$1 value=$2 tmp
  mkdir -p "$LOCAL_DIR"
  tmp=$(mktemp "$STACK_ENV.XXXXXX")
  {
    printf '# Written by %s: where the local stack listens. Read by rfm-stream and the tests.\n' "$SELF"
    if [[ -f $STACK_ENV ]]; then
      grep -v -e '^#' -e "^$key=" "$STACK_ENV" || true
    fi
    if [[ -n $value ]]; then
      printf '%s=%s\n' "$key" "$value"
    fi
  } >"$tmp"
  mv -f "$tmp" "$STACK_ENV"
}

unset_stack_env() {
  local key
  [[ -f $STACK_ENV ]] || return 0
  for key in "$@"; do
    set_stack_env "$key" ""
  done
}

stack_env_value() {
  local key=$1
  [[ -f $STACK_ENV ]] || return 0
  sed -n "s/^$key=//p" "$STACK_ENV" | tail -n1
}

# ----------------------------------------------------------------------------------------
# Secured endpoints: a throwaway CA, a server certificate for 127.0.0.1 and localhost, and
# the passwords of the user "rfm" (Kafka SCRAM, Redis ACL). Generated once into
# $SECURE_DIR and reused, so clients keep working across stop/start; wipe deletes them.

OPENSSL_CNF='
[req]
distinguished_name = dn
prompt = no
[dn]
CN = rfm-stream local stack CA (throwaway)
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
'

ensure_openssl() {
  have openssl && return 0
  apt_install openssl ||
    die "openssl not found and could not be installed; install it as root: apt-get install -y openssl"
}

# Usable: every file there, the server certificate verifies against the CA, and neither
# expires within a day.
tls_files_valid() {
  local file
  for file in "$CA_CERT" "$CA_KEY" "$SERVER_CERT" "$SERVER_KEY" "$SERVER_KEYSTORE"; do
    [[ -s $file ]] || return 1
  done
  openssl verify -CAfile "$CA_CERT" "$SERVER_CERT" >/dev/null 2>&1 &&
    openssl x509 -noout -checkend 86400 -in "$SERVER_CERT" >/dev/null 2>&1 &&
    openssl x509 -noout -checkend 86400 -in "$CA_CERT" >/dev/null 2>&1
}

# The CA is kept while it has a month left (clients may have its path configured); the
# server certificate is issued again. Keys are PKCS#8 PEM, unencrypted, mode 0600.
generate_tls_files() {
  local log="$LOG_DIR/openssl.log" cnf rc
  cnf=$(mktemp "$SECURE_DIR/openssl.cnf.XXXXXX")
  printf '%s\n' "$OPENSSL_CNF" >"$cnf"
  set +e
  (
    set -e
    umask 077
    cd "$SECURE_DIR"
    if [[ ! -s $CA_KEY || ! -s $CA_CERT ]] ||
      ! openssl x509 -noout -checkend 2592000 -in "$CA_CERT" >/dev/null 2>&1; then
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca.key.tmp
      openssl req -x509 -new -key ca.key.tmp -sha256 -days 3650 -config "$cnf" -extensions ca \
        -out ca.pem.tmp
      mv -f ca.key.tmp "$CA_KEY"
      mv -f ca.pem.tmp "$CA_CERT"
    fi
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server.key.tmp
    openssl req -new -key server.key.tmp -subj /CN=localhost -config "$cnf" -out server.csr.tmp
    openssl x509 -req -in server.csr.tmp -CA "$CA_CERT" -CAkey "$CA_KEY" \
      -set_serial "0x$(openssl rand -hex 16)" -sha256 -days 825 -extfile "$cnf" \
      -extensions server -out server.pem.tmp
    # Kafka's PEM keystore: the private key followed by the certificate chain.
    cat server.key.tmp server.pem.tmp >server-keystore.pem.tmp
    rm -f server.csr.tmp
    mv -f server.key.tmp "$SERVER_KEY"
    mv -f server.pem.tmp "$SERVER_CERT"
    mv -f server-keystore.pem.tmp "$SERVER_KEYSTORE"
    chmod 644 "$CA_CERT" "$SERVER_CERT"
  ) >>"$log" 2>&1
  rc=$?
  set -e
  rm -f "$cnf" "$SECURE_DIR"/*.tmp
  if ((rc != 0)); then
    tail -n 10 "$log" >&2 || true
    die "openssl could not generate the TLS files in $(show_path "$SECURE_DIR") (log: $(show_path "$log"))"
  fi
  say "generated a throwaway CA and a server certificate for 127.0.0.1/localhost in $(show_path "$SECURE_DIR")"
}

ensure_password() {
  local file=$1
  [[ -s $file ]] && return 0
  (umask 077 && openssl rand -hex 24 >"$file.tmp")
  mv -f "$file.tmp" "$file"
}

ensure_secure_files() {
  ensure_openssl
  mkdir -p "$SECURE_DIR" "$LOG_DIR"
  tls_files_valid || generate_tls_files
  ensure_password "$KAFKA_PASSWORD_FILE"
  ensure_password "$REDIS_PASSWORD_FILE"
  set_stack_env RFM_SECURE_CAFILE "$CA_CERT"
}

# ----------------------------------------------------------------------------------------
# Kafka

kafka_version() {
  local version
  [[ -f $POM ]] || die "$POM is missing"
  version=$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' "$POM" | head -n1)
  [[ -n $version ]] || die "no <kafka.version> in $(show_path "$POM")"
  printf '%s' "$version"
}

kafka_libs() { printf '%s/kafka-%s/libs' "$CACHE_DIR" "$(kafka_version)"; }

require_java() {
  have java || die "java not found: install a JDK 17+ (e.g. apt-get install -y openjdk-17-jre-headless)"
  local version major
  version=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
  major=${version%%.*}
  [[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$version")
  [[ $major =~ ^[0-9]+$ ]] || die "cannot tell the Java version from 'java -version' (got '$version'); Kafka needs Java 17+"
  ((major >= 17)) || die "java is version $version; Kafka $(kafka_version) needs Java 17+ (e.g. apt-get install -y openjdk-17-jre-headless)"
}

# Jars are copied by Maven once per Kafka version and pom content; the marker file, written
# only after a complete copy, records the pom checksum, so a changed pom refreshes the cache.
ensure_kafka_jars() {
  local version dir libs marker checksum tmp log
  version=$(kafka_version)
  dir="$CACHE_DIR/kafka-$version"
  libs="$dir/libs"
  marker="$dir/.complete"
  checksum=$(sha256sum "$POM" | cut -d' ' -f1)
  if [[ -f $marker && $(cat "$marker") == "$checksum" && -f $libs/kafka_2.13-$version.jar ]]; then
    return 0
  fi
  mkdir -p "$dir" "$LOG_DIR"
  # Several checkouts may share the cache: one download per version at a time.
  exec 8>"$dir.lock"
  flock -w 600 8 || die "timed out waiting for another download into $dir"
  if [[ -f $marker && $(cat "$marker") == "$checksum" && -f $libs/kafka_2.13-$version.jar ]]; then
    exec 8>&-
    return 0
  fi
  have mvn || die "mvn not found: the Kafka jars are fetched with Maven (apt-get install -y maven), or put them in $libs and write $checksum to $marker"
  say "downloading Kafka $version jars with Maven into $libs ..."
  local started
  started=$(now_ms)
  tmp=$(mktemp -d "$dir/libs.tmp.XXXXXX")
  log="$LOG_DIR/maven.log"
  if ! mvn -B -q -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$log" 2>&1; then
    rm -rf "$tmp"
    tail -n 20 "$log" >&2 || true
    die "Maven could not fetch the Kafka jars (full output: $(show_path "$log")); is Maven Central reachable?"
  fi
  [[ -f $tmp/kafka_2.13-$version.jar ]] || {
    rm -rf "$tmp"
    die "Maven finished but kafka_2.13-$version.jar is not among the copied jars; see $(show_path "$log")"
  }
  rm -f "$marker"
  rm -rf "$libs"
  mv "$tmp" "$libs"
  printf '%s\n' "$checksum" >"$marker"
  exec 8>&-
  say "Kafka jars ready: $(find "$libs" -name '*.jar' | wc -l) jars, $(du -sh "$libs" | cut -f1) ($(elapsed_since "$started"))"
}

# A Kafka process is ours if its command line names our rendered config file.
is_our_kafka() {
  local pid=$1
  pid_alive "$pid" && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$KAFKA_CONF"
}

kafka_pid() {
  local pid dir
  pid=$(cat "$KAFKA_PID_FILE" 2>/dev/null || true)
  if [[ -n $pid ]] && is_our_kafka "$pid"; then
    printf '%s' "$pid"
    return
  fi
  # The pid file may be lost (e.g. deleted by hand); look for the process itself.
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    if is_our_kafka "$pid"; then
      printf '%s' "$pid"
      return
    fi
  done
}

conf_kafka_port() {
  [[ -f $KAFKA_CONF ]] || return 0
  sed -n 's#^listeners=.*PLAINTEXT://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$KAFKA_CONF" | head -n1
}

conf_controller_port() {
  [[ -f $KAFKA_CONF ]] || return 0
  sed -n 's#^listeners=.*CONTROLLER://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$KAFKA_CONF" | head -n1
}

# Empty when the broker's configuration has no SASL_SSL listener (rendered by an older stack.sh).
conf_sasl_ssl_port() {
  [[ -f $KAFKA_CONF ]] || return 0
  sed -n 's#^listeners=.*SASL_SSL://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$KAFKA_CONF" | head -n1
}

# Metadata v4 request over a plain socket (stdlib only): used when kcat is not installed.
# v4 is the oldest Metadata version Kafka 4 still accepts (KIP-896).
KAFKA_PROBE_PY='
import socket, struct, sys
client = b"rfm-stack"
body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">i?", -1, False)
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(body)) + body)
    data = b""
    while len(data) < 16:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(1)
        data += chunk
_, correlation, _, brokers = struct.unpack(">iiii", data[:16])
sys.exit(0 if correlation == 7 and brokers >= 1 else 1)
'

# Healthy means the broker answers a metadata request listing itself.
kafka_healthy() {
  local port=$1
  [[ -n $port ]] || return 1
  # Cheap check first: kcat waits for its whole timeout when nothing listens yet.
  port_in_use "$port" || return 1
  if have kcat; then
    local metadata
    metadata=$(kcat -b "127.0.0.1:$port" -L -m 3 2>/dev/null) || return 1
    [[ $metadata == *" 1 brokers:"* ]]
  elif have python3; then
    python3 -c "$KAFKA_PROBE_PY" 127.0.0.1 "$port" 2>/dev/null
  else
    # Neither client available: the socket server accepting connections and the broker
    # having logged its start is the best evidence left.
    port_in_use "$port" && grep -q 'Kafka Server started' "$KAFKA_LOG" 2>/dev/null
  fi
}

# Healthy means the listener completes a TLS handshake whose certificate verifies against our
# CA (the SCRAM login itself is covered by tests/integration/test_security.py). Not kcat:
# librdkafka before 2.6.1 (Debian's kcat has 2.0.2) computes a SCRAM proof that Kafka 4
# rejects as invalid credentials (librdkafka#4895).
kafka_sasl_ssl_healthy() {
  local port=$1
  [[ -n $port ]] || return 1
  # No port_in_use first: a bare connect makes a TLS server log an error; a closed port fails
  # the handshake at once anyway.
  timeout 10 openssl s_client -connect "127.0.0.1:$port" -CAfile "$CA_CERT" \
    -verify_return_error -brief </dev/null >/dev/null 2>&1
}

scram_marker_value() {
  printf '%s' "$SECURE_USER:$SCRAM_MECHANISM:$(<"$KAFKA_PASSWORD_FILE")" | sha256sum | cut -d' ' -f1
}

# The SCRAM user lives in the cluster metadata: created once per data directory and password
# (a marker remembers it), so most starts do not pay for the extra JVM.
ensure_kafka_scram_user() {
  local port=$1 want
  want=$(scram_marker_value)
  if [[ -f $KAFKA_SCRAM_MARKER && $(<"$KAFKA_SCRAM_MARKER") == "$want" ]]; then
    return 0
  fi
  kafka_java kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$port" --alter \
    --add-config "$SCRAM_MECHANISM=[password=$(<"$KAFKA_PASSWORD_FILE")]" \
    --entity-type users --entity-name "$SECURE_USER" >>"$KAFKA_OUT" 2>&1 ||
    kafka_fail "could not create the SCRAM user $SECURE_USER (kafka-configs --alter --entity-type users); see $(show_path "$KAFKA_OUT")"
  printf '%s\n' "$want" >"$KAFKA_SCRAM_MARKER"
  say "kafka: SCRAM user $SECURE_USER ready ($SCRAM_MECHANISM)"
}

# After the plain listener answers: the user exists and the SASL_SSL listener lets it in.
kafka_secure_ready() {
  local pid=$1 port=$2 sasl_port=$3 deadline
  ensure_kafka_scram_user "$port"
  deadline=$(($(now_ms) + 30000))
  until kafka_sasl_ssl_healthy "$sasl_port"; do
    pid_alive "$pid" || kafka_fail "Kafka (pid $pid) exited during start-up"
    if (($(now_ms) > deadline)); then
      kafka_fail "the SASL_SSL listener on 127.0.0.1:$sasl_port does not complete a TLS handshake verified against $(show_path "$CA_CERT")"
    fi
    sleep 0.3
  done
  set_stack_env RFM_SECURE_KAFKA_BOOTSTRAP "127.0.0.1:$sasl_port"
  set_stack_env RFM_SECURE_KAFKA_SECURITY_PROTOCOL SASL_SSL
  set_stack_env RFM_SECURE_KAFKA_SASL_MECHANISM "$SCRAM_MECHANISM"
  set_stack_env RFM_SECURE_KAFKA_USERNAME "$SECURE_USER"
  set_stack_env RFM_SECURE_KAFKA_PASSWORD "$(<"$KAFKA_PASSWORD_FILE")"
  say "kafka SASL_SSL ready on 127.0.0.1:$sasl_port (SCRAM user $SECURE_USER, CA $(show_path "$CA_CERT"))"
}

UNSET_SECURE_KAFKA=(RFM_SECURE_KAFKA_BOOTSTRAP RFM_SECURE_KAFKA_SECURITY_PROTOCOL
  RFM_SECURE_KAFKA_SASL_MECHANISM RFM_SECURE_KAFKA_USERNAME RFM_SECURE_KAFKA_PASSWORD)

# kcat is optional for the stack (readiness checks fall back to python3), but `./dev test`
# requires it for its kcat tests. One failed installation attempt is remembered (until wipe),
# so that every later start does not pay for another apt-get update.
ensure_kcat() {
  local marker="$LOCAL_DIR/.kcat-install-failed"
  have kcat && return 0
  [[ -f $marker ]] && return 0
  if apt_install kcat; then
    say "installed kcat"
  else
    mkdir -p "$LOCAL_DIR"
    : >"$marker"
    warn "kcat is not installed and could not be installed (apt-get install -y kcat); readiness checks fall back to python3; the kcat tests fail under ./dev test (skip under a bare pytest)"
  fi
}

render() {
  local template=$1 target=$2 text tmp
  shift 2
  text=$(<"$template")
  while (($# >= 2)); do
    text=${text//"$1"/"$2"}
    shift 2
  done
  tmp=$(mktemp "$target.XXXXXX")
  printf '%s\n' "$text" >"$tmp"
  mv -f "$tmp" "$target"
}

kafka_java() {
  # Tools (StorageTool) log to the broker's file, but only warnings: their INFO output is a
  # full configuration dump that would bury the broker's own lines.
  java -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$LOG_DIR" \
    -Dkafka.log.level=WARN -cp "$(kafka_libs)/*" "$@"
}

kafka_fail() {
  local message=$1
  {
    # Warnings and errors say why a broker stopped; the last lines say where it got to.
    printf 'stack: --- last warnings and errors in %s ---\n' "$(show_path "$KAFKA_LOG")"
    grep -E '^\[[^]]*\] (WARN|ERROR|FATAL) ' "$KAFKA_LOG" 2>/dev/null | tail -n 10 || true
    printf 'stack: --- last lines of %s ---\n' "$(show_path "$KAFKA_LOG")"
    tail -n 5 "$KAFKA_LOG" 2>/dev/null || true
    if [[ -s $KAFKA_OUT ]]; then
      printf 'stack: --- last lines of %s ---\n' "$(show_path "$KAFKA_OUT")"
      tail -n 15 "$KAFKA_OUT"
    fi
  } >&2
  die "$message (full log: $(show_path "$KAFKA_LOG"))"
}

wait_kafka_ready() {
  local pid=$1 port=$2 started=$3 deadline waiting_since
  waiting_since=$(now_ms)
  deadline=$((waiting_since + KAFKA_START_TIMEOUT * 1000))
  until kafka_healthy "$port"; do
    pid_alive "$pid" || kafka_fail "Kafka (pid $pid) exited during start-up"
    if (($(now_ms) > deadline)); then
      kafka_fail "Kafka (pid $pid) did not answer a metadata request on 127.0.0.1:$port within $KAFKA_START_TIMEOUT s; stop it with '$SELF stop kafka' and look at the log"
    fi
    sleep 0.3
  done
  say "kafka $(kafka_version) ready on 127.0.0.1:$port (pid $pid; answered after $(elapsed_since "$waiting_since"), $(elapsed_since "$started") in all)"
}

start_kafka() {
  local started pid port controller_port sasl_port cluster_id
  started=$(now_ms)
  ensure_kcat
  mkdir -p "$KAFKA_DIR" "$LOG_DIR"
  ensure_secure_files

  pid=$(kafka_pid)
  if [[ -n $pid ]]; then
    port=$(conf_kafka_port)
    if kafka_healthy "$port"; then
      say "kafka already running on 127.0.0.1:$port (pid $pid)"
    else
      say "kafka is running (pid $pid) but not answering yet; waiting ..."
      wait_kafka_ready "$pid" "$port" "$started"
    fi
    set_stack_env RFM_KAFKA_BOOTSTRAP "127.0.0.1:$port"
    sasl_port=$(conf_sasl_ssl_port)
    if [[ -n $sasl_port ]]; then
      kafka_secure_ready "$pid" "$port" "$sasl_port"
    else
      unset_stack_env "${UNSET_SECURE_KAFKA[@]}"
      warn "kafka (pid $pid) was started by an older $SELF, without the SASL_SSL listener; restart it to get one: $SELF stop kafka && $SELF start kafka"
    fi
    return
  fi

  require_java
  ensure_kafka_jars
  port=$(choose_port kafka RFM_KAFKA_PORT "$DEFAULT_KAFKA_PORT" "$(conf_kafka_port)")
  controller_port=$(choose_port "kafka controller" RFM_KAFKA_CONTROLLER_PORT \
    "$DEFAULT_CONTROLLER_PORT" "$(conf_controller_port)" "$port")
  sasl_port=$(choose_port "kafka SASL_SSL" RFM_KAFKA_SASL_SSL_PORT \
    "$DEFAULT_SASL_SSL_PORT" "$(conf_sasl_ssl_port)" "$port" "$controller_port")
  render "$KAFKA_TEMPLATE" "$KAFKA_CONF" \
    @KAFKA_PORT@ "$port" @CONTROLLER_PORT@ "$controller_port" @SASL_SSL_PORT@ "$sasl_port" \
    @DATA_DIR@ "$KAFKA_DATA" @SERVER_KEYSTORE@ "$SERVER_KEYSTORE"

  # One run per file, so a failure shows this run's JVM output; the previous run's is kept.
  if [[ -s $KAFKA_OUT ]]; then
    mv -f "$KAFKA_OUT" "$KAFKA_OUT.1"
  fi
  : >"$KAFKA_OUT"

  if [[ ! -s $KAFKA_CLUSTER_ID_FILE ]]; then
    # What `StorageTool random-uuid` prints (16 random bytes, URL-safe base64 without
    # padding), without paying for another JVM start.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || kafka_fail "could not generate a KRaft cluster id (got '$cluster_id')"
    printf '%s\n' "$cluster_id" >"$KAFKA_CLUSTER_ID_FILE"
  fi
  cluster_id=$(<"$KAFKA_CLUSTER_ID_FILE")
  if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
    # --cluster-id=ID, not -t ID: a generated id may start with "-". The SCRAM user goes into
    # the bootstrap metadata, which saves a kafka-configs run after the start.
    rm -f "$KAFKA_SCRAM_MARKER"
    kafka_java kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$KAFKA_CONF" \
      --add-scram "$SCRAM_MECHANISM=[name=$SECURE_USER,password=$(<"$KAFKA_PASSWORD_FILE")]" \
      >>"$KAFKA_OUT" 2>&1 || kafka_fail "formatting the KRaft storage in $(show_path "$KAFKA_DATA") failed; see $(show_path "$KAFKA_OUT")"
    scram_marker_value >"$KAFKA_SCRAM_MARKER"
  fi

  # A new session (setsid) detaches the broker from this shell and its terminal, so it
  # outlives the caller (a test run, a CI step); 9>&- keeps our lock out of it.
  local -a heap
  read -r -a heap <<<"$KAFKA_HEAP_OPTS"
  setsid java "${heap[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$(kafka_libs)/*" kafka.Kafka "$KAFKA_CONF" \
    </dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$KAFKA_PID_FILE"
  say "kafka starting on 127.0.0.1:$port (SASL_SSL 127.0.0.1:$sasl_port, controller 127.0.0.1:$controller_port, pid $pid, log $(show_path "$KAFKA_LOG"))"
  wait_kafka_ready "$pid" "$port" "$started"
  set_stack_env RFM_KAFKA_BOOTSTRAP "127.0.0.1:$port"
  kafka_secure_ready "$pid" "$port" "$sasl_port"
}

# ----------------------------------------------------------------------------------------
# Redis

# A Redis process is ours if it runs in our Redis directory (it chdirs to "dir"; its
# command line is rewritten to "redis-server 127.0.0.1:<port>", so it cannot be used).
# is_our_redis PID [DIR] — DIR: $REDIS_DIR (default) or $REDIS_TLS_DIR.
is_our_redis() {
  local pid=$1 home=${2:-$REDIS_DIR}
  pid_alive "$pid" &&
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]] &&
    [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$home" ]]
}

# redis_pid [PID_FILE DIR] — default: the plain Redis.
redis_pid() {
  local pid_file=${1:-$REDIS_PID_FILE} home=${2:-$REDIS_DIR} pid dir
  pid=$(cat "$pid_file" 2>/dev/null || true)
  if [[ -n $pid ]] && is_our_redis "$pid" "$home"; then
    printf '%s' "$pid"
    return
  fi
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    if is_our_redis "$pid" "$home"; then
      printf '%s' "$pid"
      return
    fi
  done
}

redis_tls_pid() { redis_pid "$REDIS_TLS_PID_FILE" "$REDIS_TLS_DIR"; }

conf_redis_port() {
  [[ -f $REDIS_CONF ]] || return 0
  sed -n 's/^port \([0-9]*\)$/\1/p' "$REDIS_CONF" | head -n1
}

conf_redis_tls_port() {
  [[ -f $REDIS_TLS_CONF ]] || return 0
  sed -n 's/^tls-port \([0-9]*\)$/\1/p' "$REDIS_TLS_CONF" | head -n1
}

# Healthy means PING answers PONG (a Redis still loading its append-only file says LOADING).
redis_healthy() {
  local port=$1 reply
  [[ -n $port ]] || return 1
  reply=$(
    exec 7<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'PING\r\n' >&7
    read -r -t 2 line <&7 || exit 1
    printf '%s' "$line"
  ) 2>/dev/null || return 1
  [[ $reply == +PONG* ]]
}

ensure_redis_server() {
  have redis-server && return 0
  apt_install redis-server ||
    die "redis-server not found and could not be installed; install it as root: apt-get update && apt-get install -y redis-server"
  have redis-server || die "redis-server still not found after installing the redis-server package"
  say "installed redis-server"
}

start_redis() {
  local started pid port deadline
  started=$(now_ms)
  ensure_redis_server
  mkdir -p "$REDIS_DIR" "$LOG_DIR"

  pid=$(redis_pid)
  if [[ -n $pid ]]; then
    port=$(conf_redis_port)
    if redis_healthy "$port"; then
      say "redis already running on 127.0.0.1:$port (pid $pid)"
      set_stack_env RFM_REDIS_URL "redis://127.0.0.1:$port/0"
      return
    fi
  else
    port=$(choose_port redis RFM_REDIS_PORT "$DEFAULT_REDIS_PORT" "$(conf_redis_port)")
    render "$REDIS_TEMPLATE" "$REDIS_CONF" \
      @REDIS_PORT@ "$port" @REDIS_DIR@ "$REDIS_DIR" @LOG_FILE@ "$REDIS_LOG"
    rm -f "$REDIS_PID_FILE"
    # Redis daemonizes itself (daemonize yes); 9>&- keeps our lock out of it.
    (cd "$REDIS_DIR" && redis-server "$REDIS_CONF" </dev/null >>"$REDIS_LOG" 2>&1 9>&-) ||
      redis_fail "redis-server $(show_path "$REDIS_CONF") failed to start"
    say "redis starting on 127.0.0.1:$port (log $(show_path "$REDIS_LOG"))"
  fi

  deadline=$(($(now_ms) + REDIS_START_TIMEOUT * 1000))
  until redis_healthy "$port"; do
    if (($(now_ms) > deadline)); then
      redis_fail "redis did not answer PING on 127.0.0.1:$port within $REDIS_START_TIMEOUT s"
    fi
    sleep 0.1
  done
  pid=$(redis_pid)
  [[ -n $pid ]] || redis_fail "something answers on 127.0.0.1:$port, but it is not the Redis started from $(show_path "$REDIS_DIR")"
  say "redis ready on 127.0.0.1:$port (pid $pid, $(elapsed_since "$started"))"
  set_stack_env RFM_REDIS_URL "redis://127.0.0.1:$port/0"
}

# redis_fail MESSAGE [LOG]
redis_fail() {
  local log=${2:-$REDIS_LOG}
  {
    printf 'stack: --- last lines of %s ---\n' "$(show_path "$log")"
    tail -n 15 "$log" 2>/dev/null || true
  } >&2
  die "$1 (full log: $(show_path "$log"))"
}

# Healthy means PING answers PONG over TLS (verified against our CA) after logging in as
# $SECURE_USER. The password goes through the environment, not the command line.
redis_tls_healthy() {
  local port=$1 reply
  [[ -n $port && -s $REDIS_PASSWORD_FILE ]] || return 1
  reply=$(REDISCLI_AUTH=$(<"$REDIS_PASSWORD_FILE") timeout 5 redis-cli --tls --cacert "$CA_CERT" \
    -h 127.0.0.1 -p "$port" --user "$SECURE_USER" PING 2>/dev/null) || return 1
  [[ $reply == PONG* ]]
}

UNSET_SECURE_REDIS=(RFM_SECURE_REDIS_URL RFM_SECURE_REDIS_PASSWORD)

# The secured Redis: a second redis-server, TLS only, default user off (redis-tls.conf).
start_redis_tls() {
  local started pid port deadline password_hash
  started=$(now_ms)
  ensure_secure_files
  mkdir -p "$REDIS_TLS_DIR" "$LOG_DIR"

  pid=$(redis_tls_pid)
  if [[ -n $pid ]] && redis_tls_healthy "$(conf_redis_tls_port)"; then
    port=$(conf_redis_tls_port)
    say "redis TLS already running on 127.0.0.1:$port (pid $pid)"
  else
    if [[ -z $pid ]]; then
      port=$(choose_port "redis TLS" RFM_REDIS_TLS_PORT "$DEFAULT_REDIS_TLS_PORT" \
        "$(conf_redis_tls_port)" "$(conf_redis_port)")
      password_hash=$(printf '%s' "$(<"$REDIS_PASSWORD_FILE")" | sha256sum | cut -d' ' -f1)
      render "$REDIS_TLS_TEMPLATE" "$REDIS_TLS_CONF" \
        @REDIS_TLS_PORT@ "$port" @REDIS_DIR@ "$REDIS_TLS_DIR" @LOG_FILE@ "$REDIS_TLS_LOG" \
        @SERVER_CERT@ "$SERVER_CERT" @SERVER_KEY@ "$SERVER_KEY" @CA_CERT@ "$CA_CERT" \
        @USER@ "$SECURE_USER" @PASSWORD_SHA256@ "$password_hash"
      rm -f "$REDIS_TLS_PID_FILE"
      (cd "$REDIS_TLS_DIR" && redis-server "$REDIS_TLS_CONF" </dev/null >>"$REDIS_TLS_LOG" 2>&1 9>&-) ||
        redis_fail "redis-server $(show_path "$REDIS_TLS_CONF") failed to start" "$REDIS_TLS_LOG"
      say "redis TLS starting on 127.0.0.1:$port (log $(show_path "$REDIS_TLS_LOG"))"
    else
      port=$(conf_redis_tls_port)
    fi
    deadline=$(($(now_ms) + REDIS_START_TIMEOUT * 1000))
    until redis_tls_healthy "$port"; do
      if (($(now_ms) > deadline)); then
        redis_fail "redis TLS did not answer PING (TLS, user $SECURE_USER) on 127.0.0.1:$port within $REDIS_START_TIMEOUT s" "$REDIS_TLS_LOG"
      fi
      sleep 0.2
    done
    pid=$(redis_tls_pid)
    [[ -n $pid ]] || redis_fail "something answers on 127.0.0.1:$port, but it is not the Redis started from $(show_path "$REDIS_TLS_DIR")" "$REDIS_TLS_LOG"
    say "redis TLS ready on 127.0.0.1:$port (pid $pid, user $SECURE_USER, $(elapsed_since "$started"))"
  fi
  set_stack_env RFM_SECURE_REDIS_URL "rediss://$SECURE_USER@127.0.0.1:$port/0"
  set_stack_env RFM_SECURE_REDIS_PASSWORD "$(<"$REDIS_PASSWORD_FILE")"
}

# ----------------------------------------------------------------------------------------
# Commands

stop_pid() {
  local name=$1 pid=$2 deadline
  say "stopping $name (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
  while pid_alive "$pid"; do
    if (($(now_ms) > deadline)); then
      warn "$name (pid $pid) still running $STOP_TIMEOUT s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(($(now_ms) + 10000))
      while pid_alive "$pid"; do
        (($(now_ms) > deadline)) && die "$name (pid $pid) survived SIGKILL"
        sleep 0.1
      done
      break
    fi
    sleep 0.1
  done
  say "$name stopped"
}

stop_service() {
  local service=$1 pid
  case $service in
  kafka) pid=$(kafka_pid) ;;
  redis) pid=$(redis_pid) ;;
  esac
  if [[ -z $pid ]]; then
    say "$service is not running"
  else
    stop_pid "$service" "$pid"
  fi
  case $service in
  kafka) rm -f "$KAFKA_PID_FILE" ;;
  redis)
    rm -f "$REDIS_PID_FILE"
    pid=$(redis_tls_pid)
    if [[ -n $pid ]]; then
      stop_pid "redis TLS" "$pid"
    fi
    rm -f "$REDIS_TLS_PID_FILE"
    ;;
  esac
}

STATUS_FORMAT='%-15s %-10s %-16s %-12s %s\n'
STATUS_MISSING=0 # set by status_line: a process runs without an endpoint it should have

# status_line NAME PID PORT HEALTH_FUNCTION LOG — prints one line; true when healthy.
status_line() {
  local name=$1 pid=$2 port=$3 healthy=$4 log=$5 state address
  address=${port:+127.0.0.1:$port}
  if [[ -z $pid ]]; then
    state=stopped
  elif [[ -z $port ]]; then
    state=missing # the process runs without this endpoint: started by an older stack.sh
    STATUS_MISSING=1
  elif "$healthy" "$port"; then
    state=healthy
  else
    state=unhealthy
  fi
  # shellcheck disable=SC2059
  printf "$STATUS_FORMAT" "$name" "$state" "${address:--}" "${pid:+pid $pid}" "log $(show_path "$log")"
  [[ $state == healthy ]]
}

status_service() {
  local service=$1 pid rc=0
  case $service in
  kafka)
    pid=$(kafka_pid)
    status_line kafka "$pid" "$(conf_kafka_port)" kafka_healthy "$KAFKA_LOG" || rc=1
    status_line "kafka SASL_SSL" "$pid" "$(conf_sasl_ssl_port)" kafka_sasl_ssl_healthy "$KAFKA_LOG" || rc=1
    ;;
  redis)
    status_line redis "$(redis_pid)" "$(conf_redis_port)" redis_healthy "$REDIS_LOG" || rc=1
    status_line "redis TLS" "$(redis_tls_pid)" "$(conf_redis_tls_port)" redis_tls_healthy "$REDIS_TLS_LOG" || rc=1
    ;;
  esac
  return "$rc"
}

cmd_status() {
  local rc=0 service
  # shellcheck disable=SC2059
  printf "$STATUS_FORMAT" service state address pid log
  for service in "$@"; do
    status_service "$service" || rc=1
  done
  if [[ " $* " == *" kafka "* ]]; then
    printf 'kafka %s, jars %s, data %s\n' "$(kafka_version)" "$(kafka_libs)" "$(show_path "$KAFKA_DATA")"
  fi
  if [[ -f $CA_CERT ]]; then
    printf 'secured endpoints: CA %s, user %s (%s env --secure)\n' "$(show_path "$CA_CERT")" "$SECURE_USER" "$SELF"
  fi
  if ((STATUS_MISSING != 0)); then
    printf 'kafka was started by an older %s, without its SASL_SSL listener: restart it (%s stop kafka && %s start kafka)\n' "$SELF" "$SELF" "$SELF"
  elif ((rc != 0)); then
    local which=""
    (($# == 1)) && which=" $1"
    printf 'not every service is healthy: start with %s start%s\n' "$SELF" "$which"
  fi
  return "$rc"
}

cmd_wipe() {
  local service
  for service in "$@"; do
    stop_service "$service"
    case $service in
    kafka)
      rm -rf "$KAFKA_DIR"
      rm -f "$KAFKA_LOG" "$KAFKA_LOG".[0-9]* "$KAFKA_OUT" "$KAFKA_OUT.1"
      unset_stack_env RFM_KAFKA_BOOTSTRAP "${UNSET_SECURE_KAFKA[@]}"
      ;;
    redis)
      rm -rf "$REDIS_DIR" "$REDIS_TLS_DIR"
      rm -f "$REDIS_LOG" "$REDIS_TLS_LOG"
      unset_stack_env RFM_REDIS_URL "${UNSET_SECURE_REDIS[@]}"
      ;;
    esac
    say "$service data deleted"
  done
  # The CA and passwords are shared by both services: deleted with the last of them.
  if [[ ! -d $KAFKA_DIR && ! -d $REDIS_DIR && -d $SECURE_DIR ]]; then
    rm -rf "$SECURE_DIR"
    rm -f "$LOG_DIR/openssl.log"
    unset_stack_env RFM_SECURE_CAFILE
    say "TLS files and passwords deleted"
  fi
  if [[ -f $STACK_ENV ]] && ! grep -q '^RFM_' "$STACK_ENV"; then
    rm -f "$STACK_ENV"
  fi
  rm -f "$LOCAL_DIR/.kcat-install-failed"
  if [[ -d $LOCAL_DIR/worker ]]; then
    say "note: worker state in $(show_path "$LOCAL_DIR/worker") was kept; delete it too if it belonged to the wiped broker"
  fi
}

# env: the content of stack.env. env --secure: the worker's own variables (RFM_KAFKA_*,
# RFM_REDIS_*) for the secured endpoints, e.g. eval "$(stack.sh env --secure --export)".
cmd_env() {
  local export_prefix=$1 secure=$2 bootstrap redis_url cafile
  if [[ ! -f $STACK_ENV ]] || ! grep -q '^RFM_' "$STACK_ENV"; then
    die "$(show_path "$STACK_ENV") does not exist yet: start the stack with $SELF start"
  fi
  if [[ $secure != 1 ]]; then
    grep '^RFM_' "$STACK_ENV" | sed "s/^/$export_prefix/"
    return
  fi
  bootstrap=$(stack_env_value RFM_SECURE_KAFKA_BOOTSTRAP)
  redis_url=$(stack_env_value RFM_SECURE_REDIS_URL)
  cafile=$(stack_env_value RFM_SECURE_CAFILE)
  if [[ -z $bootstrap || -z $redis_url || -z $cafile ]]; then
    die "$(show_path "$STACK_ENV") has no secured endpoints (RFM_SECURE_*): start the stack with $SELF start (a broker started by an older $SELF needs a restart)"
  fi
  {
    printf 'RFM_KAFKA_BOOTSTRAP=%s\n' "$bootstrap"
    printf 'RFM_KAFKA_SECURITY_PROTOCOL=%s\n' "$(stack_env_value RFM_SECURE_KAFKA_SECURITY_PROTOCOL)"
    printf 'RFM_KAFKA_SASL_MECHANISM=%s\n' "$(stack_env_value RFM_SECURE_KAFKA_SASL_MECHANISM)"
    printf 'RFM_KAFKA_SASL_USERNAME=%s\n' "$(stack_env_value RFM_SECURE_KAFKA_USERNAME)"
    printf 'RFM_KAFKA_SASL_PASSWORD=%s\n' "$(stack_env_value RFM_SECURE_KAFKA_PASSWORD)"
    printf 'RFM_KAFKA_SSL_CAFILE=%s\n' "$cafile"
    printf 'RFM_REDIS_URL=%s\n' "$redis_url"
    printf 'RFM_REDIS_PASSWORD=%s\n' "$(stack_env_value RFM_SECURE_REDIS_PASSWORD)"
    printf 'RFM_REDIS_SSL_CAFILE=%s\n' "$cafile"
  } | sed "s/^/$export_prefix/"
}

cmd_logs() {
  local follow=$1 lines=$2 service
  shift 2
  local -a files=()
  for service in "$@"; do
    case $service in
    kafka) [[ -f $KAFKA_LOG ]] && files+=("$KAFKA_LOG") ;;
    redis)
      [[ -f $REDIS_LOG ]] && files+=("$REDIS_LOG")
      [[ -f $REDIS_TLS_LOG ]] && files+=("$REDIS_TLS_LOG")
      ;;
    esac
  done
  ((${#files[@]} > 0)) || die "no log files yet in $(show_path "$LOG_DIR"): start the stack with $SELF start"
  if [[ $follow == 1 ]]; then
    exec tail -n "$lines" -F "${files[@]}"
  fi
  tail -n "$lines" "${files[@]}"
}

main() {
  local command="" service="" follow=0 lines=100 export_prefix="" secure=0 s
  while (($# > 0)); do
    case $1 in
    -h | --help | help)
      usage
      return 0
      ;;
    -f | --follow) follow=1 ;;
    -n | --lines)
      if (($# < 2)) || [[ ! $2 =~ ^[0-9]+$ ]]; then
        die "$1 needs a number of lines"
      fi
      lines=$2
      shift
      ;;
    --export) export_prefix="export " ;;
    --secure) secure=1 ;;
    start | stop | status | wipe | env | logs)
      [[ -z $command ]] || die "one command at a time (got '$command' and '$1'); see $SELF --help"
      command=$1
      ;;
    kafka | redis | all)
      [[ -z $service ]] || die "one service at a time (got '$service' and '$1'); see $SELF --help"
      service=$1
      ;;
    *) die "unknown argument '$1'; see $SELF --help" ;;
    esac
    shift
  done
  [[ -n $command ]] || {
    usage >&2
    return 2
  }
  local -a services
  case ${service:-all} in
  all) services=(kafka redis) ;;
  *) services=("$service") ;;
  esac

  case $command in
  start)
    take_lock
    for s in "${services[@]}"; do
      "start_$s"
      if [[ $s == redis ]]; then
        start_redis_tls
      fi
    done
    ;;
  stop)
    take_lock
    for s in "${services[@]}"; do stop_service "$s"; done
    ;;
  wipe)
    take_lock
    cmd_wipe "${services[@]}"
    ;;
  status) cmd_status "${services[@]}" ;;
  env) cmd_env "$export_prefix" "$secure" ;;
  logs) cmd_logs "$follow" "$lines" "${services[@]}" ;;
  esac
}

main "$@"
