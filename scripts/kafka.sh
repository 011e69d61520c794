#!/usr/bin/env bash
# A real Apache Kafka broker for tests: one KRaft node (broker + controller)
# on 127.0.0.1, on a free port, with a small heap.
#
#   scripts/kafka.sh fetch   download the pinned Kafka jars from Maven Central
#                            with mvn (cached in .kafka/lib; .ci/run warms it)
#   scripts/kafka.sh up      fetch, format KRaft storage (first time), start,
#                            wait until the broker is started; the last line
#                            printed is KAFKA_ADDR=127.0.0.1:PORT. Running it
#                            again on a stopped (or killed) broker restarts it
#                            on the same port with the same data.
#   scripts/kafka.sh down    stop the broker (SIGTERM, then SIGKILL) and
#                            delete its data
#   scripts/kafka.sh stop    stop the broker, keep its data
#   scripts/kafka.sh addr    print KAFKA_ADDR=... of the running broker
#
# KAFKA_STATE_DIR (default .kafka/run) holds the broker's configuration,
# data, log and pid; tests that kill and restart a broker of their own point
# it at a temporary directory. KAFKA_HEAP (default 384m) sets -Xmx.
set -euo pipefail

KAFKA_VERSION=3.9.1
SLF4J_VERSION=1.7.36

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${KAFKA_CACHE_DIR:-$root/.kafka}"
lib="$cache/lib-$KAFKA_VERSION"
state="${KAFKA_STATE_DIR:-$cache/run}"
heap="${KAFKA_HEAP:-384m}"

log() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [ -f "$lib/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    return
  fi
  command -v mvn >/dev/null || { log "mvn not found (apt-get install maven)"; exit 1; }
  mkdir -p "$cache"
  local pom="$cache/pom.xml" tmp="$lib.tmp"
  # kafka_2.13 pulls the broker and its runtime dependencies; slf4j-reload4j
  # gives the broker a logger (it only ships the slf4j API).
  cat >"$pom" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ccflow.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$tmp"
  log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION with mvn"
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$cache/mvn.log" 2>&1; then
    cat "$cache/mvn.log" >&2
    log "mvn failed"
    exit 1
  fi
  mv "$tmp" "$lib"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() {
  [ -f "$state/broker.pid" ] && kill -0 "$(cat "$state/broker.pid")" 2>/dev/null
}

java_init() {
  command -v java >/dev/null || { log "java not found (apt-get install openjdk-17-jre-headless)"; exit 1; }
  JAVA=(java -Xmx"$heap" -Xms64m -XX:+UseSerialGC -Xss512k
    -Dlog4j.configuration="file:$state/log4j.properties" -cp "$lib/*")
}

configure() {
  mkdir -p "$state/data"
  local port cport
  port="$(free_port)"
  cport="$(free_port)"
  while [ "$cport" = "$port" ]; do cport="$(free_port)"; done
  cat >"$state/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$state/data
num.partitions=1
num.network.threads=2
num.io.threads=2
background.threads=2
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
message.max.bytes=8388608
log.segment.bytes=67108864
EOF
  cat >"$state/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
EOF
  echo "127.0.0.1:$port" >"$state/addr"
  java_init
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)" \
    -c "$state/server.properties" >"$state/format.log" 2>&1 || { cat "$state/format.log" >&2; exit 1; }
}

up() {
  fetch
  if running; then
    echo "KAFKA_ADDR=$(cat "$state/addr")"
    return
  fi
  [ -f "$state/addr" ] || configure
  local addr started
  addr="$(cat "$state/addr")"
  : >"$state/broker.log"
  java_init
  nohup "${JAVA[@]}" kafka.Kafka "$state/server.properties" >>"$state/broker.log" 2>&1 &
  echo $! >"$state/broker.pid"
  started=""
  for _ in $(seq 1 240); do
    if grep -q "Kafka Server started" "$state/broker.log"; then started=1; break; fi
    running || break
    sleep 0.25
  done
  if [ -z "$started" ]; then
    tail -50 "$state/broker.log" >&2
    log "broker did not start"
    stop
    exit 1
  fi
  log "broker started on $addr (pid $(cat "$state/broker.pid"), state $state)"
  echo "KAFKA_ADDR=$addr"
}

stop() {
  if running; then
    local pid
    pid="$(cat "$state/broker.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$state/broker.pid"
}

case "${1:-}" in
  fetch) fetch ;;
  up) up ;;
  stop) stop ;;
  down)
    stop
    rm -rf "$state"
    ;;
  addr)
    running || { log "not running"; exit 1; }
    echo "KAFKA_ADDR=$(cat "$state/addr")"
    ;;
  *)
    echo "usage: $0 fetch|up|down|stop|addr" >&2
    exit 2
    ;;
esac
