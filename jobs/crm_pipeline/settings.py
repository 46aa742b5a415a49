"""Typed settings, resolved once at the edge (CLI / Airflow task) and passed down as arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def resource_dir(name: str) -> Path:
    """Top-level resource folder (`schemas`, `expectations`, `infra`) of this checkout.

    `CRM_RESOURCES_DIR` points elsewhere when the package is deployed without its checkout.
    """
    base = Path(os.environ.get("CRM_RESOURCES_DIR", REPO_ROOT))
    path = base / name
    if not path.is_dir():
        raise FileNotFoundError(f"resource folder {path} not found; set CRM_RESOURCES_DIR to the project root")
    return path


def _on_off(variable: str, default: bool | None) -> bool | None:
    """The switch `variable` of the environment: `on` or `off` (unset or empty: `default`)."""
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return default
    if value not in ("on", "off"):
        raise ValueError(f"{variable}={os.environ[variable]!r}: expected on or off")
    return value == "on"


@dataclass(frozen=True)
class SparkSettings:
    """How to build the SparkSession. Local mode by default; a cluster passes its master URL."""

    master: str = "local[2]"
    app_name: str = "crm-pipeline"
    jar_dir: Path = REPO_ROOT / "infra" / "jars" / "lib"
    shuffle_partitions: int | None = None  # None: 4 per core of the cluster (adaptive execution coalesces)
    #: adaptive query execution (`spark.sql.adaptive.enabled`); None: off in local mode, on a cluster.
    #: On one machine's few cores, planning each shuffle stage again as a job of its own cost more than
    #: it saved: a demo 175.3 -> 166.9 s and 209.8 -> 184.5 s, a day of 1 M subscribers 174.2 -> 165.1 s,
    #: a month of them the same (docs/benchmarks.md); a cluster keeps it to merge its many small partitions
    adaptive: bool | None = None
    driver_memory: str = "6g"
    #: options of the driver's and the executors' JVMs: the parallel (throughput) collector, which
    #: spent 12 % less CPU than the default G1 on a whole `crm run` (docs/benchmarks.md)
    java_options: str = "-XX:+UseParallelGC"
    extra_conf: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls) -> SparkSettings:
        """Read `CRM_SPARK_MASTER`, `CRM_JAR_DIR`, `CRM_SHUFFLE_PARTITIONS`, `CRM_ADAPTIVE_EXECUTION`
        (`on` or `off`; unset or empty: by the master), `CRM_DRIVER_MEMORY`, `CRM_JAVA_OPTIONS` (set and
        empty: the JVM's defaults)."""
        d = cls()
        return cls(
            master=os.environ.get("CRM_SPARK_MASTER", d.master),
            jar_dir=Path(os.environ.get("CRM_JAR_DIR", d.jar_dir)),
            shuffle_partitions=int(os.environ["CRM_SHUFFLE_PARTITIONS"]) if os.environ.get("CRM_SHUFFLE_PARTITIONS")
            else d.shuffle_partitions,
            adaptive=_on_off("CRM_ADAPTIVE_EXECUTION", d.adaptive),
            driver_memory=os.environ.get("CRM_DRIVER_MEMORY", d.driver_memory),
            java_options=os.environ.get("CRM_JAVA_OPTIONS", d.java_options),
        )


@dataclass(frozen=True)
class LakeLayout:
    """Where every Delta table lives under the lake root (local path or any Hadoop URI)."""

    root: str

    def table(self, layer: str, name: str) -> str:
        return f"{self.root.rstrip('/')}/{layer}/{name}"

    def bronze(self, feed: str) -> str:
        return self.table("bronze", feed)

    def silver(self, feed: str) -> str:
        return self.table("silver", feed)

    def gold(self, name: str) -> str:
        return self.table("gold", name)

    def ops(self, name: str) -> str:
        return self.table("ops", name)

    @property
    def data_docs(self) -> str | None:
        """Local folder of the GX validation results and the per-run Data Docs: `CRM_DATA_DOCS_DIR`,
        else `<lake>/data_docs` when the lake is on the local file system; None (not kept) for a
        remote lake without that setting."""
        if os.environ.get("CRM_DATA_DOCS_DIR"):
            return os.environ["CRM_DATA_DOCS_DIR"]
        root = self.root.rstrip("/")
        if root.startswith("file://"):
            return root[len("file://"):] + "/data_docs"
        return None if "://" in root else root + "/data_docs"

    @property
    def quarantine(self) -> str:
        """Rejected records with raw lines: restricted (may hold PII)."""
        return self.table("restricted", "quarantine")

    def typed_copy(self, feed: str) -> str:
        """Scratch folder of a feed's load in progress: its batch's records as the reading tasks typed
        them (`ingest.spark_io.TypedCopy`), deleted when the load ends; restricted like bronze."""
        return self.table("restricted", f"typed_copy/{feed}")


DEMO_HMAC_KEY = "crm-demo-key-not-for-production"


def msisdn_hmac_key(allow_demo: bool = False) -> str:
    """The secret behind msisdn_key, from `CRM_MSISDN_HMAC_KEY` (in Airflow: a connection or secrets
    backend exports it). Only the demo may fall back to a labelled demo key, with a warning."""
    import logging

    key = os.environ.get("CRM_MSISDN_HMAC_KEY")
    if key:
        return key
    if allow_demo:
        logging.getLogger(__name__).warning(
            "CRM_MSISDN_HMAC_KEY is not set: using the DEMO key; msisdn_key values are not protected"
        )
        print("WARNING: CRM_MSISDN_HMAC_KEY not set; msisdn_key uses the public demo key", flush=True)
        return DEMO_HMAC_KEY
    from crm_pipeline.errors import UsageError

    raise UsageError("CRM_MSISDN_HMAC_KEY is not set: it keys msisdn_key; set it in the environment "
                     "(or pass --demo-key to use the public demo key)")


def load_analytics_config(path: Path | None = None) -> dict:
    """Versioned analytics parameters (value-segment weights and thresholds ...)."""
    import json

    path = path or Path(os.environ.get("CRM_ANALYTICS_CONFIG", resource_dir("config") / "analytics.json"))
    return json.loads(Path(path).read_text(encoding="utf-8"))


def config_section(section: dict) -> dict:
    """A config section's parameters: every key but the human-readable `description`."""
    return {k: v for k, v in section.items() if k != "description"}
