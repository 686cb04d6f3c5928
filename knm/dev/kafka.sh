#!/usr/bin/env bash
# Apache Kafka for knm's development and tests: one broker in KRaft mode on loopback, its
# jars resolved from Maven Central with Maven (Java 17+), storage formatted once, topic
# auto-creation off. Idempotent like postgres.sh.
#   kafka.sh up|down|status|restart|env|bootstrap
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"

PORT="${KNM_DEV_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${KNM_DEV_KAFKA_CONTROLLER_PORT:-19093}"
DIR="$KNM_DEV_HOME/kafka"
LIB="$DIR/lib"
DATA="$DIR/data"
PID="$DIR/kafka.pid"
CONFIG="$DIR/server.properties"

java_ok() {
  command -v java >/dev/null && java -version 2>&1 | head -n 1 | grep -Eq '"(1[7-9]|[2-9][0-9])[."]'
}

install() {
  local missing=()
  java_ok || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
  mkdir -p "$DIR"
  local stamp
  stamp="$(sha256sum "$HERE/kafka-pom.xml" | cut -c1-16)"
  if [ "$(cat "$LIB/.stamp" 2>/dev/null || true)" != "$stamp" ]; then
    say "resolving the Kafka broker's jars from Maven Central"
    rm -rf "$LIB.new"
    mvn -q -B -f "$HERE/kafka-pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$LIB.new" -DincludeScope=runtime >&2
    echo "$stamp" >"$LIB.new/.stamp"
    rm -rf "$LIB"
    mv "$LIB.new" "$LIB"
  fi
}

configure() {
  # The broker's own copy: a broker outlives the checkout that started it, which may be
  # removed (a worktree, a clone in /tmp) while the broker still reads its logging setup.
  cp "$HERE/kafka-log4j2.properties" "$DIR/log4j2.properties"
  cat >"$CONFIG" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
CONF
}

JAVA=(java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$DIR/log4j2.properties"
  -Djava.io.tmpdir="$DIR/tmp" -cp "$LIB/*")

kafka_java() { "${JAVA[@]}" "$@"; }

format() {
  [ -f "$DATA/meta.properties" ] && return
  say "formatting the broker's storage in $DATA"
  mkdir -p "$DIR/tmp"
  kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
    -c "$CONFIG" >/dev/null
}

up() {
  install
  configure
  format
  if ! pid_alive "$PID"; then
    say "starting Kafka on 127.0.0.1:$PORT"
    mkdir -p "$DIR/tmp"
    # A plain command, not a function: `$!` is then the JVM itself, which `down` stops.
    "${JAVA[@]}" kafka.Kafka "$CONFIG" >>"$DIR/kafka.log" 2>&1 </dev/null &
    echo $! >"$PID"
    disown
  fi
  local deadline=$((SECONDS + 120))
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! pid_alive "$PID" || [ "$SECONDS" -ge "$deadline" ]; then
      say "Kafka did not open 127.0.0.1:$PORT; the end of $DIR/kafka.log:"
      tail -n 20 "$DIR/kafka.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}

down() {
  if pid_alive "$PID"; then
    say "stopping Kafka"
    kill "$(cat "$PID")"
    for _ in $(seq 60); do pid_alive "$PID" || break; sleep 0.5; done
    if pid_alive "$PID"; then kill -9 "$(cat "$PID")"; fi
  fi
  rm -f "$PID"
}

status() {
  if pid_alive "$PID"; then
    echo "kafka: running on 127.0.0.1:$PORT (pid $(cat "$PID"), data $DATA)"
  else
    echo "kafka: stopped"
    return 3
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  restart) down; up ;;
  env) echo "export KNM_KAFKA_BOOTSTRAP=127.0.0.1:$PORT" ;;
  bootstrap) echo "127.0.0.1:$PORT" ;;
  *) echo "usage: $0 up|down|status|restart|env|bootstrap" >&2; exit 2 ;;
esac
