#!/usr/bin/env bash
# Loopback services for kafka-store's integration tests.
#
#   kafka         127.0.0.1:9092  Apache Kafka 4.1.1 from Maven Central, single
#                                 KRaft node (broker+controller, controller 9093)
#   kafka-pair    127.0.0.1:9292 and :9392  a second cluster of two brokers
#                                 (nodes 11 and 12, controller 10 on 9293), for
#                                 tests that stop one broker of two
#   kafka-secure  127.0.0.1:9192 SSL, :9193 SASL_PLAINTEXT, :9194 SASL_SSL,
#                 :9195 SSL with a client certificate required, :9196 PLAINTEXT
#                 (administration), controller 9197, :9198 SSL with a
#                 certificate for another host name, :9199 SASL_PLAINTEXT
#                 whose sessions last 2 s (re-authentication): a third single-node
#                 cluster for the TLS and SASL tests (users below); its CA,
#                 certificates and keys are in <state>/kafka-secure/tls/
#   gcs-emulator  http://127.0.0.1:9023  gcp-storage-emulator (PyPI), in memory
#   mariadb       127.0.0.1:3306  Debian's mariadb-server, root with no password
#   s3            http://127.0.0.1:9024  s3s-fs 0.14.1 (crates.io, built into
#                 <state>/s3s-fs with cargo install), objects in <state>/s3/data:
#                 an S3 API that checks SigV4 signatures and honours
#                 If-None-Match on PUT and on multipart completion; its keys
#                 are in <state>/s3/credentials (AWS credentials INI);
#                 virtual-hosted requests under the domain s3.test.
#
# Usage: vendor-config/test-services.sh COMMAND
#   install      fetch the Kafka jars (Maven), the Python venv (PyPI) and the
#                Debian packages that are missing; quick when already done
#   up           install, then start whatever is not running and wait until
#                every service answers; prints one "<service> <address>" line each
#   down         stop them all and delete their data (keeps jars and venv)
#   status       say which are running (exit 1 unless all are)
#   stop-kafka   stop the broker, keeping its data (SIGKILL after 20 s)
#   start-kafka  start the broker again and wait until it answers
#   stop-pair-11 / start-pair-11 / stop-pair-12 / start-pair-12
#                the same for one broker of the pair
#   stop-secure / start-secure     the same for kafka-secure
#   stop-mariadb / start-mariadb   the same for MariaDB
#
# kafka-secure users: "plain-user" / "plain-secret" (PLAIN), "archiver" /
# "archiver-secret" (SCRAM-SHA-256 and SCRAM-SHA-512). tls/: ca.pem (signed
# the broker's and the client's certificates), broker.pem (SAN IP:127.0.0.1,
# DNS:localhost), client.pem + client.key (CN=archiver), other-ca.pem (a CA
# that signed nothing here), wrong-name.pem (SAN DNS:elsewhere.invalid, the
# certificate of :9198).
#
# State (jars, venv, data, logs, pid files) lives in
# ${KAFKA_STORE_SERVICES:-<repo>/.services}; logs in <state>/logs/.
# Helper for topics and producing: tests/support/kafka_tool.py, run it with
# <state>/venv/bin/python.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(dirname -- "$SCRIPT_DIR")
STATE=${KAFKA_STORE_SERVICES:-$REPO/.services}
mkdir -p -- "$STATE"
STATE=$(cd -- "$STATE" && pwd -P)

readonly HOST=127.0.0.1
readonly KAFKA_PORT=9092
readonly CONTROLLER_PORT=9093
readonly GCS_PORT=9023
readonly MARIADB_PORT=3306
readonly S3_PORT=9024
# Virtual-hosted requests name BUCKET.s3.test:9024 (tests reach it through a
# proxy that stands in for its DNS); s3s-fs compares the Host header with
# its port.
readonly S3_DOMAIN=s3.test:$S3_PORT
readonly S3S_VERSION=0.14.1
# The test server's only user (any fixed pair: the tests read the file).
readonly S3_ACCESS_KEY=AKIAKAFKASTORETEST01
readonly S3_SECRET_KEY=kafka-store-test-secret-key-0000000000001
# Any fixed base64url UUID; the data dir is formatted with it once.
readonly KAFKA_CLUSTER_ID=jIkRTXagShG74tkKzvHC6Q
readonly KAFKA_READY_TIMEOUT=60
readonly KAFKA_STOP_TIMEOUT=20
readonly PAIR_CONTROLLER_PORT=9293
# node id → port of the pair's brokers.
readonly -A PAIR_PORT=([11]=9292 [12]=9392)
readonly PAIR_CLUSTER_ID=XwVJJ2Y_SRasCywVK33yUw
# listener name → port of kafka-secure.
readonly -A SECURE_PORT=([ssl]=9192 [sasl_plaintext]=9193 [sasl_ssl]=9194 [mtls]=9195 [plaintext]=9196 [controller]=9197 [wrong_name]=9198 [reauth]=9199)
readonly SECURE_CLUSTER_ID=Hn0Z8pH3Tq-3w2h3Yx0ULA
readonly SECURE_SCRAM_USER=archiver
readonly SECURE_SCRAM_PASSWORD=archiver-secret

readonly KAFKA_CONFIG_DIR=$SCRIPT_DIR/kafka
readonly KAFKA_POM=$KAFKA_CONFIG_DIR/pom.xml
readonly REQUIREMENTS=$REPO/tests/support/requirements.txt
readonly KAFKA_TOOL=$REPO/tests/support/kafka_tool.py
readonly S3_TOOL=$REPO/tests/support/s3_tool.py

readonly LOGS=$STATE/logs
readonly RUN=$STATE/run
readonly VENV=$STATE/venv
readonly KAFKA_LIBS=$STATE/kafka/libs
readonly KAFKA_LIBS_STAMP=$STATE/kafka/libs.stamp
readonly KAFKA_DATA=$STATE/kafka/data
readonly KAFKA_CONF=$STATE/kafka/server.properties
readonly PAIR_DIR=$STATE/kafka-pair
readonly SECURE_DIR=$STATE/kafka-secure
readonly SECURE_TLS=$SECURE_DIR/tls
readonly SECURE_CONF=$SECURE_DIR/server.properties
readonly VENV_STAMP=$VENV/.requirements.sha256
readonly MDB_DIR=$STATE/mariadb
readonly MDB_DATA=$MDB_DIR/data
readonly MDB_SOCK=$MDB_DIR/mariadb.sock

JAVA=${JAVA:-java}
PYTHON=${PYTHON:-python3}

log() { printf 'test-services: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root for: $*"
	fi
}

sha_of() { cat -- "$@" | sha256sum | cut -d' ' -f1; }

# True when something accepts TCP connections on HOST:$1.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# True when pid $1 exists and is not a zombie.
proc_alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# Prints the pid recorded for service $1 if that process is alive and its
# command line contains $2 (guards against a recycled pid).
running_pid() {
	local f=$RUN/$1.pid pid
	[[ -s $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	proc_alive "$pid" || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
	printf '%s\n' "$pid"
}

# launch NAME CMD...: start CMD detached (own session, stdin closed, output
# appended to logs/NAME.log) and record its pid. The lock fd is not inherited.
launch() {
	local name=$1
	shift
	printf '\n===== %s starting %s =====\n' "$name" "$(date '+%F %T')" >>"$LOGS/$name.log"
	setsid nohup "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
	printf '%s\n' "$!" >"$RUN/$name.pid"
}

fail_with_log() { # NAME MESSAGE
	log "error: $2; last lines of $LOGS/$1.log:"
	tail -n 40 -- "$LOGS/$1.log" >&2 || true
	exit 1
}

# wait_ready NAME PATTERN TIMEOUT PROBE...: poll PROBE until it succeeds; fail
# early if the process died.
wait_ready() {
	local name=$1 pattern=$2 timeout=$3
	shift 3
	local deadline=$((SECONDS + timeout))
	while true; do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		if ! running_pid "$name" "$pattern" >/dev/null; then
			fail_with_log "$name" "$name exited during start-up"
		fi
		if ((SECONDS >= deadline)); then
			fail_with_log "$name" "$name not ready after $timeout s"
		fi
		sleep 0.2
	done
}

# stop_service NAME PATTERN TIMEOUT [PORT...]: SIGTERM, wait, SIGKILL after
# TIMEOUT s; then wait until the ports are closed.
stop_service() {
	local name=$1 pattern=$2 timeout=$3
	shift 3
	local pid deadline port
	if pid=$(running_pid "$name" "$pattern"); then
		kill -TERM "$pid" 2>/dev/null || true
		deadline=$((SECONDS + timeout))
		while proc_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
		if proc_alive "$pid"; then
			log "$name (pid $pid) still running after $timeout s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 10))
			while proc_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
			proc_alive "$pid" && die "$name (pid $pid) survived SIGKILL"
		fi
		log "$name stopped"
	fi
	rm -f -- "$RUN/$name.pid"
	for port in "$@"; do
		deadline=$((SECONDS + 10))
		while port_open "$port"; do
			((SECONDS < deadline)) || die "port $port still open after stopping $name"
			sleep 0.1
		done
	done
}

# ------------------------------------------------------------------ install

install_debs() {
	# systemd: systemd-analyze verify of the unit; procps: ps in the init-script
	# test; socat and openssl: the TLS-terminating proxy in front of the emulator.
	local -a want=(mariadb-server musl-tools curl systemd procps socat openssl) missing=()
	local p
	command -v "$JAVA" >/dev/null 2>&1 || want+=(openjdk-17-jre-headless)
	command -v mvn >/dev/null 2>&1 || want+=(maven)
	# Debian's own python3 creates venvs only with python3-venv.
	"$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 || want+=(python3-venv)
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	if [[ " ${missing[*]} " == *" python3-venv "* ]]; then
		# A venv half-made without it would pass for a made one later.
		rm -rf -- "$VENV"
	fi
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOGS/install.log" 2>&1; then
		log "apt-get install failed; apt-get update and retry"
		as_root apt-get update -q >>"$LOGS/install.log" 2>&1 || die "apt-get update failed (see $LOGS/install.log)"
		as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOGS/install.log" 2>&1 ||
			die "apt-get install ${missing[*]} failed (see $LOGS/install.log)"
	fi
}

# Debian's package starts the system MariaDB at install and at boot; it
# would hold port 3306 with socket-only root. Keep it stopped and out of
# the boot sequence: ours runs from its own data dir.
quiet_system_mariadb() {
	[[ -e /etc/init.d/mariadb ]] || return 0
	if service mariadb status >/dev/null 2>&1; then
		log "stopping the system MariaDB service (it would hold port $MARIADB_PORT)"
		(as_root service mariadb stop) >>"$LOGS/install.log" 2>&1 || true
	fi
	if compgen -G '/etc/rc[2-5].d/S*mariadb' >/dev/null; then
		(as_root update-rc.d mariadb disable) >>"$LOGS/install.log" 2>&1 || true
	fi
	if [[ -d /run/systemd/system ]] && systemctl -q is-enabled mariadb 2>/dev/null; then
		(as_root systemctl disable mariadb) >>"$LOGS/install.log" 2>&1 || true
	fi
}

install_kafka() {
	local want
	want=$(sha_of "$KAFKA_POM")
	if [[ -f $KAFKA_LIBS_STAMP && $(<"$KAFKA_LIBS_STAMP") == "$want" ]] &&
		compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
		return 0
	fi
	log "resolving Kafka jars with Maven ($KAFKA_POM)"
	rm -rf -- "$KAFKA_LIBS" "$KAFKA_LIBS.tmp" "$KAFKA_LIBS_STAMP"
	mkdir -p -- "$STATE/kafka"
	if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" >>"$LOGS/install.log" 2>&1; then
		tail -n 30 -- "$LOGS/install.log" >&2 || true
		die "mvn dependency:copy-dependencies failed (see $LOGS/install.log)"
	fi
	mv -- "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
	printf '%s\n' "$want" >"$KAFKA_LIBS_STAMP"
	log "Kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS"
}

install_venv() {
	local want
	want=$(sha_of "$REQUIREMENTS")
	local usable=false
	"$VENV/bin/python" -m pip --version >/dev/null 2>&1 && usable=true
	if $usable && [[ -f $VENV_STAMP && $(<"$VENV_STAMP") == "$want" ]]; then
		return 0
	fi
	if ! $usable; then
		log "creating Python venv $VENV"
		rm -rf -- "$VENV"
		"$PYTHON" -m venv "$VENV" >>"$LOGS/install.log" 2>&1 ||
			die "$PYTHON -m venv failed (see $LOGS/install.log; Debian's python3 needs python3-venv)"
	fi
	log "pip install -r $REQUIREMENTS"
	"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" >>"$LOGS/install.log" 2>&1 ||
		die "pip install failed (see $LOGS/install.log)"
	printf '%s\n' "$want" >"$VENV_STAMP"
}

install_s3s() {
	local bin=$STATE/s3s-fs/bin/s3s-fs
	if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -qF -- "$S3S_VERSION"; then
		return 0
	fi
	log "cargo install s3s-fs $S3S_VERSION (a few minutes, once)"
	cargo install -q s3s-fs --version "$S3S_VERSION" --features binary --root "$STATE/s3s-fs" >>"$LOGS/install.log" 2>&1 ||
		die "cargo install s3s-fs failed (see $LOGS/install.log)"
}

cmd_install() {
	install_debs
	quiet_system_mariadb
	install_kafka
	install_venv
	install_s3s
}

# ------------------------------------------------------------------ kafka

kafka_probe() {
	port_open "$KAFKA_PORT" &&
		"$VENV/bin/python" "$KAFKA_TOOL" --bootstrap "$HOST:$KAFKA_PORT" --timeout 5 metadata
}

# 1 GiB of heap: the many-partitions test and benchmark hold thousands of
# partitions (about 40 KiB of heap each).
KAFKA_JAVA=(
	"$JAVA" -Xmx1g -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
	-Djava.awt.headless=true "-Dlog4j2.configurationFile=$KAFKA_CONFIG_DIR/log4j2.properties"
	-cp "$KAFKA_LIBS/*"
)

# Start the broker if it is not running (formatting its data dir on first use);
# does not wait.
launch_kafka() {
	if running_pid kafka kafka.Kafka >/dev/null; then
		return 0
	fi
	local port
	for port in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
		port_open "$port" && die "port $port is in use by a process this script did not start"
	done
	mkdir -p -- "$KAFKA_DATA"
	sed "s|@DATA_DIR@|$KAFKA_DATA|g" "$KAFKA_CONFIG_DIR/server.properties" >"$KAFKA_CONF"
	if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
		printf '\n===== format %s =====\n' "$(date '+%F %T')" >>"$LOGS/kafka.log"
		"${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" -c "$KAFKA_CONF" >>"$LOGS/kafka.log" 2>&1 9>&- ||
			fail_with_log kafka "formatting $KAFKA_DATA failed"
	fi
	# A broker keeps about one descriptor per partition: the many-partitions
	# test and benchmark need more than the usual soft limit of 1,024.
	(
		ulimit -n "$(ulimit -Hn)"
		launch kafka "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_CONF"
	)
}

wait_kafka() { wait_ready kafka kafka.Kafka "$KAFKA_READY_TIMEOUT" kafka_probe; }

# ------------------------------------------------------------------ kafka pair

# The config of pair node $1 (10 = controller), written from its template.
pair_conf() {
	local node=$1 conf=$PAIR_DIR/$1.properties
	mkdir -p -- "$PAIR_DIR/data/$node"
	if ((node == 10)); then
		sed "s|@DATA_DIR@|$PAIR_DIR/data/$node|g" "$KAFKA_CONFIG_DIR/pair-controller.properties" >"$conf"
	else
		sed -e "s|@DATA_DIR@|$PAIR_DIR/data/$node|g" -e "s|@NODE_ID@|$node|g" \
			-e "s|@PORT@|${PAIR_PORT[$node]}|g" "$KAFKA_CONFIG_DIR/pair-broker.properties" >"$conf"
	fi
	if [[ ! -f $PAIR_DIR/data/$node/meta.properties ]]; then
		printf '\n===== format %s =====\n' "$(date '+%F %T')" >>"$LOGS/kafka-pair-$node.log"
		"${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$PAIR_CLUSTER_ID" -c "$conf" \
			>>"$LOGS/kafka-pair-$node.log" 2>&1 9>&- ||
			fail_with_log "kafka-pair-$node" "formatting $PAIR_DIR/data/$node failed"
	fi
	printf '%s\n' "$conf"
}

# Starts pair node $1 unless it runs; does not wait.
launch_pair_node() {
	local node=$1 port conf
	running_pid "kafka-pair-$node" "$PAIR_DIR/$node.properties" >/dev/null && return 0
	port=${PAIR_PORT[$node]:-$PAIR_CONTROLLER_PORT}
	port_open "$port" && die "port $port is in use by a process this script did not start"
	conf=$(pair_conf "$node")
	launch "kafka-pair-$node" "${PAIR_JAVA[@]}" kafka.Kafka "$conf"
}

PAIR_JAVA=(
	"$JAVA" -Xmx384m -Xms64m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
	-Djava.awt.headless=true "-Dlog4j2.configurationFile=$KAFKA_CONFIG_DIR/log4j2.properties"
	-cp "$KAFKA_LIBS/*"
)

# Ready when broker $1 answers metadata listing itself (registered, unfenced).
pair_probe() {
	"$VENV/bin/python" "$KAFKA_TOOL" --bootstrap "$HOST:${PAIR_PORT[$1]}" --timeout 5 metadata |
		grep -q "^$1 "
}

wait_pair_broker() {
	wait_ready "kafka-pair-$1" "$PAIR_DIR/$1.properties" "$KAFKA_READY_TIMEOUT" pair_probe "$1"
}

cmd_start_pair_broker() {
	install_kafka
	install_venv
	launch_pair_node 10
	launch_pair_node "$1"
	wait_pair_broker "$1"
	printf 'kafka-pair-%s %s:%s\n' "$1" "$HOST" "${PAIR_PORT[$1]}"
}

cmd_stop_pair_broker() {
	stop_service "kafka-pair-$1" "$PAIR_DIR/$1.properties" "$KAFKA_STOP_TIMEOUT" "${PAIR_PORT[$1]}"
}

stop_pair() {
	local node
	for node in 11 12; do cmd_stop_pair_broker "$node"; done
	stop_service kafka-pair-10 "$PAIR_DIR/10.properties" "$KAFKA_STOP_TIMEOUT" "$PAIR_CONTROLLER_PORT"
}

# ------------------------------------------------------------------ kafka secure

# The test CA, the broker's certificate (SAN IP:127.0.0.1, DNS:localhost),
# a client certificate for mutual TLS, and a second CA that signed nothing
# here; made once into $SECURE_TLS.
secure_tls() {
	[[ -f $SECURE_TLS/done ]] && return 0
	rm -rf -- "$SECURE_TLS"
	mkdir -p -- "$SECURE_TLS"
	local out=$LOGS/kafka-secure.log name
	printf '\n===== openssl %s =====\n' "$(date '+%F %T')" >>"$out"
	(
		cd -- "$SECURE_TLS"
		for name in ca other-ca; do
			openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$name.key" -out "$name.pem" \
				-subj "/CN=kafka-store test $name" -addext basicConstraints=critical,CA:TRUE \
				-addext keyUsage=critical,keyCertSign,cRLSign
		done
		openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=localhost
		printf '%s\n' subjectAltName=IP:127.0.0.1,DNS:localhost extendedKeyUsage=serverAuth \
			basicConstraints=CA:FALSE >broker.ext
		openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile broker.ext -out broker.pem
		openssl req -newkey rsa:2048 -nodes -keyout wrong-name.key -out wrong-name.csr -subj /CN=elsewhere.invalid
		printf '%s\n' subjectAltName=DNS:elsewhere.invalid extendedKeyUsage=serverAuth \
			basicConstraints=CA:FALSE >wrong-name.ext
		openssl x509 -req -in wrong-name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile wrong-name.ext -out wrong-name.pem
		cat wrong-name.key wrong-name.pem >wrong-name-keystore.pem
		openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=archiver
		printf '%s\n' extendedKeyUsage=clientAuth basicConstraints=CA:FALSE >client.ext
		openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile client.ext -out client.pem
		cat broker.key broker.pem >broker-keystore.pem
		touch done
	) >>"$out" 2>&1 9>&- || fail_with_log kafka-secure "making the test certificates in $SECURE_TLS failed"
}

# Starts kafka-secure unless it runs (certificates, config and formatting
# with its SCRAM user on first use); does not wait.
launch_secure() {
	running_pid kafka-secure "$SECURE_CONF" >/dev/null && return 0
	local port
	for port in "${SECURE_PORT[@]}"; do
		port_open "$port" && die "port $port is in use by a process this script did not start"
	done
	secure_tls
	mkdir -p -- "$SECURE_DIR/data"
	sed -e "s|@DATA_DIR@|$SECURE_DIR/data|g" -e "s|@TLS_DIR@|$SECURE_TLS|g" \
		"$KAFKA_CONFIG_DIR/secure.properties" >"$SECURE_CONF"
	if [[ ! -f $SECURE_DIR/data/meta.properties ]]; then
		printf '\n===== format %s =====\n' "$(date '+%F %T')" >>"$LOGS/kafka-secure.log"
		"${PAIR_JAVA[@]}" kafka.tools.StorageTool format -t "$SECURE_CLUSTER_ID" -c "$SECURE_CONF" \
			--add-scram "SCRAM-SHA-256=[name=$SECURE_SCRAM_USER,password=$SECURE_SCRAM_PASSWORD]" \
			--add-scram "SCRAM-SHA-512=[name=$SECURE_SCRAM_USER,password=$SECURE_SCRAM_PASSWORD]" \
			>>"$LOGS/kafka-secure.log" 2>&1 9>&- ||
			fail_with_log kafka-secure "formatting $SECURE_DIR/data failed"
	fi
	launch kafka-secure "${PAIR_JAVA[@]}" kafka.Kafka "$SECURE_CONF"
}

# Ready when the administration listener answers metadata and every secure
# listener accepts connections.
secure_probe() {
	local port
	for port in "${SECURE_PORT[@]}"; do port_open "$port" || return 1; done
	"$VENV/bin/python" "$KAFKA_TOOL" --bootstrap "$HOST:${SECURE_PORT[plaintext]}" --timeout 5 metadata
}

wait_secure() { wait_ready kafka-secure "$SECURE_CONF" "$KAFKA_READY_TIMEOUT" secure_probe; }

print_secure() {
	printf 'kafka-secure ssl=%s:%s sasl_plaintext=%s:%s sasl_ssl=%s:%s mtls=%s:%s plaintext=%s:%s wrong_name=%s:%s reauth=%s:%s tls=%s\n' \
		"$HOST" "${SECURE_PORT[ssl]}" "$HOST" "${SECURE_PORT[sasl_plaintext]}" "$HOST" "${SECURE_PORT[sasl_ssl]}" \
		"$HOST" "${SECURE_PORT[mtls]}" "$HOST" "${SECURE_PORT[plaintext]}" "$HOST" "${SECURE_PORT[wrong_name]}" \
		"$HOST" "${SECURE_PORT[reauth]}" "$SECURE_TLS"
}

cmd_start_secure() {
	install_kafka
	install_venv
	launch_secure
	wait_secure
	print_secure
}

cmd_stop_secure() {
	stop_service kafka-secure "$SECURE_CONF" "$KAFKA_STOP_TIMEOUT" "${SECURE_PORT[@]}"
}

# ------------------------------------------------------------------ gcs emulator

gcs_probe() { curl -s -o /dev/null --max-time 2 "http://$HOST:$GCS_PORT/storage/v1/b"; }

launch_gcs() {
	if running_pid gcs-emulator gcp-storage-emulator >/dev/null; then
		return 0
	fi
	port_open "$GCS_PORT" && die "port $GCS_PORT is in use by a process this script did not start"
	launch gcs-emulator "$VENV/bin/gcp-storage-emulator" start --host "$HOST" --port "$GCS_PORT" --in-memory
}

wait_gcs() { wait_ready gcs-emulator gcp-storage-emulator 30 gcs_probe; }

# ------------------------------------------------------------------ s3 (s3s-fs)

# Any HTTP answer (an unsigned request is refused with 403).
s3_probe() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$HOST:$S3_PORT/") != 000 ]]; }

launch_s3() {
	if running_pid s3 s3s-fs >/dev/null; then
		return 0
	fi
	port_open "$S3_PORT" && die "port $S3_PORT is in use by a process this script did not start"
	mkdir -p -- "$STATE/s3/data"
	printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
		"$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$STATE/s3/credentials"
	launch s3 "$STATE/s3s-fs/bin/s3s-fs" --host "$HOST" --port "$S3_PORT" \
		--access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" --domain "$S3_DOMAIN" "$STATE/s3/data"
}

wait_s3() { wait_ready s3 s3s-fs 30 s3_probe; }

# ------------------------------------------------------------------ mariadb

mariadb_probe() {
	mariadb --no-defaults -h "$HOST" -P "$MARIADB_PORT" -uroot --connect-timeout=2 -e 'select 1'
}

launch_mariadb() {
	if running_pid mariadb mariadbd >/dev/null; then
		return 0
	fi
	port_open "$MARIADB_PORT" && die "port $MARIADB_PORT is in use by a process this script did not start"
	local user
	if [[ ! -d $MDB_DATA/mysql ]]; then
		rm -rf -- "$MDB_DIR"
		mkdir -p -- "$MDB_DATA"
		# mariadbd runs as mysql when that user can reach the state dir (not,
		# e.g., under a 0700 home); otherwise as root.
		user=root
		if [[ $(id -u) -eq 0 ]] && id mysql >/dev/null 2>&1; then
			chown -R mysql:mysql -- "$MDB_DIR"
			if runuser -u mysql -- test -w "$MDB_DATA" 2>/dev/null; then
				user=mysql
			else
				chown -R root:root -- "$MDB_DIR"
			fi
		fi
		printf '\n===== install-db %s =====\n' "$(date '+%F %T')" >>"$LOGS/mariadb.log"
		mariadb-install-db --no-defaults --datadir="$MDB_DATA" --auth-root-authentication-method=normal \
			--user="$user" --skip-test-db >>"$LOGS/mariadb.log" 2>&1 9>&- ||
			fail_with_log mariadb "mariadb-install-db failed"
	fi
	user=$(stat -c %U -- "$MDB_DATA")
	local mariadbd
	mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
	launch mariadb "$mariadbd" --no-defaults --user="$user" --datadir="$MDB_DATA" \
		--socket="$MDB_SOCK" --port="$MARIADB_PORT" --bind-address="$HOST" \
		--innodb-flush-log-at-trx-commit=2
}

wait_mariadb() { wait_ready mariadb mariadbd 30 mariadb_probe; }

# ------------------------------------------------------------------ commands

cmd_up() {
	cmd_install
	launch_gcs
	launch_s3
	launch_mariadb
	launch_kafka
	launch_pair_node 10
	launch_pair_node 11
	launch_pair_node 12
	launch_secure
	wait_gcs
	wait_s3
	wait_mariadb
	wait_kafka
	wait_pair_broker 11
	wait_pair_broker 12
	wait_secure
	printf 'kafka %s:%s\n' "$HOST" "$KAFKA_PORT"
	printf 'kafka-pair %s:%s,%s:%s\n' "$HOST" "${PAIR_PORT[11]}" "$HOST" "${PAIR_PORT[12]}"
	print_secure
	printf 'gcs-emulator http://%s:%s\n' "$HOST" "$GCS_PORT"
	printf 's3 http://%s:%s\n' "$HOST" "$S3_PORT"
	printf 'mariadb %s:%s\n' "$HOST" "$MARIADB_PORT"
}

cmd_down() {
	stop_service kafka kafka.Kafka "$KAFKA_STOP_TIMEOUT" "$KAFKA_PORT" "$CONTROLLER_PORT"
	stop_service gcs-emulator gcp-storage-emulator 10 "$GCS_PORT"
	stop_service s3 s3s-fs 10 "$S3_PORT"
	stop_service mariadb mariadbd 30 "$MARIADB_PORT"
	stop_pair
	cmd_stop_secure
	rm -rf -- "$KAFKA_DATA" "$KAFKA_CONF" "$MDB_DIR" "$PAIR_DIR" "$SECURE_DIR" "$STATE/s3"
}

cmd_stop_kafka() {
	stop_service kafka kafka.Kafka "$KAFKA_STOP_TIMEOUT" "$KAFKA_PORT" "$CONTROLLER_PORT"
}

cmd_start_kafka() {
	install_kafka
	install_venv
	launch_kafka
	wait_kafka
	printf 'kafka %s:%s\n' "$HOST" "$KAFKA_PORT"
}

cmd_stop_mariadb() {
	stop_service mariadb mariadbd 30 "$MARIADB_PORT"
}

cmd_start_mariadb() {
	install_debs
	launch_mariadb
	wait_mariadb
	printf 'mariadb %s:%s\n' "$HOST" "$MARIADB_PORT"
}

cmd_status() {
	local all=0 pid
	if pid=$(running_pid kafka kafka.Kafka); then
		printf 'kafka running (pid %s) %s:%s\n' "$pid" "$HOST" "$KAFKA_PORT"
	else
		printf 'kafka stopped\n'
		all=1
	fi
	local node
	for node in 10 11 12; do
		if pid=$(running_pid "kafka-pair-$node" "$PAIR_DIR/$node.properties"); then
			printf 'kafka-pair-%s running (pid %s)\n' "$node" "$pid"
		else
			printf 'kafka-pair-%s stopped\n' "$node"
			all=1
		fi
	done
	if pid=$(running_pid kafka-secure "$SECURE_CONF"); then
		printf 'kafka-secure running (pid %s) %s:%s-%s\n' "$pid" "$HOST" "${SECURE_PORT[ssl]}" "${SECURE_PORT[wrong_name]}"
	else
		printf 'kafka-secure stopped\n'
		all=1
	fi
	if pid=$(running_pid gcs-emulator gcp-storage-emulator); then
		printf 'gcs-emulator running (pid %s) http://%s:%s\n' "$pid" "$HOST" "$GCS_PORT"
	else
		printf 'gcs-emulator stopped\n'
		all=1
	fi
	if pid=$(running_pid s3 s3s-fs); then
		printf 's3 running (pid %s) http://%s:%s\n' "$pid" "$HOST" "$S3_PORT"
	else
		printf 's3 stopped\n'
		all=1
	fi
	if pid=$(running_pid mariadb mariadbd); then
		printf 'mariadb running (pid %s) %s:%s\n' "$pid" "$HOST" "$MARIADB_PORT"
	else
		printf 'mariadb stopped\n'
		all=1
	fi
	return "$all"
}

usage() {
	sed -n '/^# Usage:/,/^#$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

main() {
	(($# == 1)) || usage
	mkdir -p -- "$LOGS" "$RUN"
	# One invocation at a time per state dir (children do not inherit fd 9).
	exec 9>"$STATE/.lock"
	flock 9
	local t0=$SECONDS
	case $1 in
	install) cmd_install ;;
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	stop-kafka) cmd_stop_kafka ;;
	start-kafka) cmd_start_kafka ;;
	stop-pair-11 | stop-pair-12) cmd_stop_pair_broker "${1#stop-pair-}" ;;
	start-pair-11 | start-pair-12) cmd_start_pair_broker "${1#start-pair-}" ;;
	stop-secure) cmd_stop_secure ;;
	start-secure) cmd_start_secure ;;
	stop-mariadb) cmd_stop_mariadb ;;
	start-mariadb) cmd_start_mariadb ;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
	log "$1 done in $((SECONDS - t0)) s"
}

main "$@"
