# Two commands for a fresh clone (see README.md):
#   make demo   generate a data set and run the pipeline on it
#   make test   run the test suite
# Each bootstraps what it still lacks: the virtual environment with the locked
# packages, the JVM jars resolved by Maven into infra/jars/lib (and a class-data archive of
# them for faster Spark starts), Airflow's metadata DB, and
# Debian's PostgreSQL server package (the warehouse tests start their own server from it).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JARS := infra/jars/lib
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags

.PHONY: demo test crash-test submit-test demo-test setup venv jars localfs classes airflow-db postgres browser bench profiler clean

# The setup steps run side by side where one does not wait for another (the venv beside the jars
# and Debian's packages, then the class-data archive beside Airflow's DB): `make -j4 setup`.
SETUP := $(MAKE) --no-print-directory -j4

demo:
	$(SETUP) setup
	$(BIN)/crm demo $(DEMO_ARGS)

# Two workers: modules run side by side (tests/conftest.py keeps each module, and every user of
# the shared pipeline run, on one worker). PYTEST_ARGS="-p no:xdist ..." runs them one by one.
PYTEST_ARGS ?= -n 2 --dist loadscope

test:
	$(SETUP) setup browser
	$(BIN)/pytest $(PYTEST_ARGS)

# The crash chains outside Airflow: a month's pipeline from its landing zone, its `crm` steps killed
# at every fault point later in their work, and ingest alone (about 20 minutes; docs/data-quality.md).
# `make test` kills the Airflow scenario's tasks at every point and lets Airflow retry them.
crash-test: setup
	$(BIN)/pytest -p no:xdist -m crash tests/integration/test_crash_safety.py tests/integration/test_crash_ingest.py

# A DAG task spark-submitted to the standalone cluster through the Spark connection (the maintenance
# DAG's silver step), after the Airflow scenario it takes its environment from (about 17 minutes;
# docs/scaling.md). `make test` runs `crm run` itself against the same cluster.
submit-test: setup
	$(BIN)/pytest -p no:xdist -m submit tests/integration/test_cluster.py

# `crm demo` from scratch and its report checked in headless Chromium, every section drawn (about 10
# minutes; docs/report.md). `make test` checks the report of a shorter run.
demo-test: setup browser
	$(BIN)/pytest -p no:xdist -m demo tests/integration/test_demo_report.py

setup: venv jars localfs classes airflow-db postgres

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

jars: $(JARS)/.resolved
$(JARS)/.resolved: infra/jars/pom.xml
	rm -rf $(JARS)
	mvn --batch-mode --quiet -f infra/jars/pom.xml dependency:copy-dependencies \
	    -DoutputDirectory=$(CURDIR)/$(JARS) -DincludeGroupIds=io.delta,io.unitycatalog,org.postgresql
	ls $(JARS)/*.jar > /dev/null
	touch $@

# Hadoop's local file system without a chmod or readlink process per file (infra/localfs), which
# local-mode drivers put on their class path: compiled against the Hadoop API pyspark ships
LOCALFS := $(JARS)/local/crm-localfs.jar
localfs: $(LOCALFS)
$(LOCALFS): $(JARS)/.resolved $(VENV)/.installed $(wildcard infra/localfs/src/org/crmpipeline/fs/*.java)
	rm -rf $(JARS)/local && mkdir -p $(JARS)/local/classes
	javac --release 17 -d $(JARS)/local/classes \
	    -cp "$$($(BIN)/python -c 'import glob, os, pyspark; print(*glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar")))')" \
	    infra/localfs/src/org/crmpipeline/fs/*.java
	jar cf $@ -C $(JARS)/local/classes .

# The JDK local-mode Spark drivers run on: JAVA_HOME if set, else a JDK 25 if the machine has one,
# else the `java` on the path. What they start from (infra/spark/archive_classes.py): on a JDK 25 an
# ahead-of-time cache (about 40 s to build here), else a class-data archive; rebuilt when the venv
# or the jars change. For another JDK: `rm infra/jars/lib/.classes; make classes SPARK_JAVA_HOME=...`
SPARK_JAVA_HOME ?= $(or $(JAVA_HOME),$(firstword $(wildcard /usr/lib/jvm/*-25-*)))
classes: $(JARS)/.classes
$(JARS)/.classes: $(JARS)/.resolved $(LOCALFS) $(VENV)/.installed infra/spark/archive_classes.py
	$(BIN)/python infra/spark/archive_classes.py $(JARS) $(SPARK_JAVA_HOME)
	touch $@

airflow-db: $(AIRFLOW_HOME)/.migrated $(AIRFLOW_HOME)/.pools
$(AIRFLOW_HOME)/.migrated: $(VENV)/.installed
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/migrate.log; exit 1)
	touch $@

# One writer per lake layer at a time, across DAGs (crm_pipeline/dag_support.py POOLS)
$(AIRFLOW_HOME)/.pools: $(AIRFLOW_HOME)/.migrated jobs/crm_pipeline/dag_support.py
	$(BIN)/airflow pools set crm_silver_writer 1 "crm ingest and rollup: one writer of bronze, silver and the rollups" > /dev/null
	$(BIN)/airflow pools set crm_gold_writer 1 "crm analyse, train and publish: one writer of gold, the registry and the warehouse" > /dev/null
	touch $@

# Debian's PostgreSQL server binaries, for the warehouse tests' throwaway server (tests/pg_server.py);
# installed when missing (as root; otherwise the script says what to install).
postgres:
	infra/postgres/install.sh

# Debian's Chromium, for the report's browser test (tests/integration/test_report.py): installed when
# missing (as root; otherwise the script says what to install). `make demo` does not need it.
browser:
	infra/chromium/install.sh

bench: setup
	$(BIN)/python bench/daily_stage.py --section $(BENCH_ARGS)
	$(BIN)/python bench/monthly_stage.py --section
	$(BIN)/python bench/generator_throughput.py

# async-profiler's agent for bench/jvm_profile.py (where a command's CPU goes), from Maven Central;
# not needed to run or test the pipeline
PROFILER := $(JARS)/profiler/libasyncProfiler.so
ASYNC_PROFILER := 4.0
profiler: $(PROFILER)
$(PROFILER):
	rm -rf $(JARS)/profiler && mkdir -p $(JARS)/profiler
	mvn --batch-mode --quiet dependency:copy -Dartifact=tools.profiler:async-profiler:$(ASYNC_PROFILER) \
	    -DoutputDirectory=$(CURDIR)/$(JARS)/profiler
	cd $(JARS)/profiler && arch=$$(uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/') \
	    && jar xf async-profiler-$(ASYNC_PROFILER).jar linux-$$arch/libasyncProfiler.so \
	    && mv linux-$$arch/libasyncProfiler.so . && rmdir linux-$$arch

clean:
	rm -rf var spark-warehouse metastore_db derby.log
