#!/usr/bin/env bash
# A Spark standalone cluster on one machine, from the pyspark distribution alone (no download):
# one Master and N Workers as separate JVM processes. For trying the cluster path end to end;
# production clusters are set up as docs/scaling.md describes.
#
#   infra/spark/standalone.sh start [WORKERS]   start a master and WORKERS workers (default 2); prints the URL
#   infra/spark/standalone.sh stop              stop them
#   infra/spark/standalone.sh status            print the master URL and the processes, exit 1 if down
#
# Settings (environment):
#   CRM_CLUSTER_DIR      state and logs (default var/spark-cluster under the checkout)
#   CRM_CLUSTER_HOST     address everything binds to (default 127.0.0.1)
#   CRM_CLUSTER_PORT     master port (default 7077)
#   CRM_WORKER_CORES     cores per worker (default 1)
#   CRM_WORKER_MEMORY    memory per worker for its executors (default 2g)
#   SPARK_HOME           Spark distribution (default: the installed pyspark package)
#   JAVA_HOME            JDK of the master, workers and executors (default: the one `make setup` recorded
#                        in infra/jars/lib/java-home, which local-mode drivers run on too; else `java`)
#   PYTHON               interpreter that finds pyspark (default .venv/bin/python, else python3)
#
# Then run the pipeline against it with CRM_SPARK_MASTER=spark://HOST:PORT (see docs/scaling.md).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${CRM_CLUSTER_DIR:-$root/var/spark-cluster}"
host="${CRM_CLUSTER_HOST:-127.0.0.1}"
port="${CRM_CLUSTER_PORT:-7077}"
cores="${CRM_WORKER_CORES:-1}"
memory="${CRM_WORKER_MEMORY:-2g}"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
url="spark://$host:$port"

spark_home() {
    if [ -n "${SPARK_HOME:-}" ]; then echo "$SPARK_HOME"; return; fi
    "$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null || {
        echo "standalone.sh: no SPARK_HOME and $python cannot import pyspark (run make setup)" >&2; exit 2; }
}

# Wait until `pattern` appears in `log`, or fail naming the log.
await() {
    local log="$1" pattern="$2" what="$3" pid="$4"
    for _ in $(seq 1 120); do
        grep -q "$pattern" "$log" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "standalone.sh: $what exited before it was ready; last lines of $log:" >&2
            tail -20 "$log" >&2; exit 1
        fi
        sleep 0.5
    done
    echo "standalone.sh: $what not ready after 60 s; see $log" >&2; exit 1
}

start() {
    local workers="${1:-2}"
    if status >/dev/null 2>&1; then echo "standalone.sh: a cluster is already running at $url (stop it first)" >&2; exit 1; fi
    local home; home="$(spark_home)"
    mkdir -p "$dir"
    rm -f "$dir"/*.pid
    export SPARK_HOME="$home" SPARK_LOG_DIR="$dir" SPARK_NO_DAEMONIZE=1 SPARK_LOCAL_IP="$host"
    if [ -z "${JAVA_HOME:-}" ] && [ -f "$root/infra/jars/lib/java-home" ]; then
        JAVA_HOME="$(cat "$root/infra/jars/lib/java-home")"; export JAVA_HOME
    fi
    # The workers' executors start Python workers with the interpreter the driver names
    # (PYSPARK_PYTHON); the pipeline package must be importable there.
    nohup "$home/bin/spark-class" org.apache.spark.deploy.master.Master \
        --host "$host" --port "$port" --webui-port 0 > "$dir/master.log" 2>&1 &
    echo $! > "$dir/master.pid"
    await "$dir/master.log" "I have been elected leader" "master" "$(cat "$dir/master.pid")"
    for i in $(seq 1 "$workers"); do
        mkdir -p "$dir/worker-$i"
        nohup "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker \
            --host "$host" --webui-port 0 --cores "$cores" --memory "$memory" \
            --work-dir "$dir/worker-$i" "$url" > "$dir/worker-$i.log" 2>&1 &
        echo $! > "$dir/worker-$i.pid"
    done
    for i in $(seq 1 "$workers"); do
        await "$dir/worker-$i.log" "Successfully registered with master" "worker $i" "$(cat "$dir/worker-$i.pid")"
    done
    echo "$url" > "$dir/url"
    echo "$url"
}

stop() {
    local pidfile pid
    for pidfile in "$dir"/worker-*.pid "$dir"/master.pid; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        # spark-class execs java, so the recorded pid is the JVM; its executors die with their worker.
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    rm -f "$dir/url"
}

status() {
    local up=0 pidfile
    [ -f "$dir/master.pid" ] && kill -0 "$(cat "$dir/master.pid")" 2>/dev/null && up=1
    [ "$up" = 1 ] || { echo "no cluster running (state in $dir)"; return 1; }
    cat "$dir/url" 2>/dev/null || echo "$url"
    for pidfile in "$dir"/master.pid "$dir"/worker-*.pid; do
        [ -f "$pidfile" ] && echo "  $(basename "$pidfile" .pid): pid $(cat "$pidfile")"
    done
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
