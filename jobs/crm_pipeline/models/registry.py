"""The model registry: one folder per trained model version under `<lake>/models/<name>/`.

Each version folder holds `card.json` (what MLflow's registry would record: version, training
time, algorithm, training window, test month, metrics, feature list, data version, parameters)
and `model.joblib` (the fitted scikit-learn estimators). card.json is written last and a version
exists only once it is there, so a reader sees a complete version or none. MLflow itself is not
used: its current releases require pyarrow < 26, which the stack pins at 26.0.1 (docs/churn.md).

Paths may be local or any URI pyarrow's filesystem layer opens (HDFS, S3, ...), like the lake.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

import joblib
from pyarrow import fs as pafs


@dataclass(frozen=True)
class ModelCard:
    """Facts about one trained model version (serialised as card.json)."""

    version: str
    name: str
    trained_at: str  # ISO UTC
    spec: str  # hash of the feature list and model-shaping settings: models of one spec are comparable
    algorithm: str  # the deployed estimator
    baseline_algorithm: str
    train_months: list[str]
    test_month: str
    labels_known_through: str  # last month whose data any label used (train or test): first month it may score
    n_train: int
    n_test: int
    positives_train: int
    positives_test: int
    feature_list: list[str]
    metrics: dict  # algorithm -> {auc, top_decile_lift, emp, brier, base_rate}
    calibration: dict  # algorithm -> list of {bin, n, mean_score, observed_rate}
    lift: dict  # algorithm -> list of {decile, targeted_share, churners_captured_share, cumulative_lift, churn_rate}
    drift_reference: dict  # feature (and "churn_score") -> {edges, shares} on the training sample
    data_version: dict  # input table -> Delta version read
    params: dict
    config_version: str
    notes: list[str] = field(default_factory=list)
    churners_by_reason: dict = field(default_factory=dict)  # test month: churn type -> churners, top-decile share
    fitted: dict = field(default_factory=dict)  # what fitting chose: boosting settings, trees per member, OOF log-loss

    @property
    def first_scorable_month(self) -> date:
        return date.fromisoformat(self.labels_known_through)


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in root:
        return pafs.LocalFileSystem(), os.path.abspath(root)
    return pafs.FileSystem.from_uri(root)


class Registry:
    """Model versions of one model name under a lake root."""

    def __init__(self, lake_root: str, name: str):
        self.name = name
        self.fs, base = _filesystem(lake_root.rstrip("/"))
        self.root = f"{base}/models/{name}"

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def cards(self) -> list[ModelCard]:
        """Every registered version's card, oldest training first."""
        if not self._exists(self.root):
            return []
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root)):
            if info.type != pafs.FileType.Directory or not self._exists(f"{info.path}/card.json"):
                continue  # a version being written (or abandoned half-way) has no card yet
            with self.fs.open_input_stream(f"{info.path}/card.json") as f:
                out.append(ModelCard(**json.loads(f.read().decode("utf-8"))))
        return sorted(out, key=lambda c: (c.trained_at, c.version))

    def has(self, version: str) -> bool:
        return self._exists(f"{self.root}/{version}/card.json")

    def load(self, version: str) -> dict:
        """The fitted estimators of a version, keyed by algorithm."""
        with self.fs.open_input_stream(f"{self.root}/{version}/model.joblib") as f:
            return joblib.load(io.BytesIO(f.read()))

    def register(self, card: ModelCard, estimators: dict) -> None:
        """Write a version: the model file, then card.json, whose presence makes the version exist
        (a single-file write, atomic on local disks and object stores alike, where folders cannot be
        renamed). An existing version is kept."""
        if self.has(card.version):
            return
        folder = f"{self.root}/{card.version}"
        self.fs.create_dir(folder, recursive=True)
        buf = io.BytesIO()
        joblib.dump(estimators, buf)
        with self.fs.open_output_stream(f"{folder}/model.joblib") as f:
            f.write(buf.getvalue())
        with self.fs.open_output_stream(f"{folder}/card.json") as f:
            f.write(json.dumps(asdict(card), indent=2, sort_keys=True, default=str).encode("utf-8"))


def utc_now_iso() -> str:
    from datetime import timezone

    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
