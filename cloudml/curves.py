"""Per-epoch learning curves as TensorBoard event files (what the Kubeflow UI's TensorBoard
viewer opens), written from a stage's history.json rows.

    write_curves(rows, log_dir, "pretrain")   # log_dir/events.out.tfevents.*
    read_scalars(log_dir)                     # {"pretrain/selection_loss": [(1, 0.41), ...]}

Tags are `<stage>/<series>` with the epoch as the step, so pretrain and finetune of one
member sit side by side in one TensorBoard. tensorboardX writes the files (no TensorFlow);
read_scalars reads them back with tensorboardX's own Event protobuf.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# history.json column -> the series name TensorBoard shows
SERIES = {
    "train_loss": "train_loss",
    "selection_loss": "selection_loss",  # held-out tails of the training flights
    "selection_r2": "selection_r2",
    "lr": "learning_rate",
    "seconds": "epoch_seconds",
}


def write_curves(rows: Iterable[dict[str, Any]], log_dir: Path, stage: str) -> Path:
    """One scalar per history column and epoch into a new event file under log_dir; returns
    log_dir. Rows without an epoch, and missing or non-numeric values, are skipped."""
    from tensorboardX import SummaryWriter

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(logdir=str(log_dir), filename_suffix=f".{stage}")
    try:
        for row in rows:
            if "epoch" not in row:
                continue
            for column, series in SERIES.items():
                value = row.get(column)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"{stage}/{series}", float(value), int(row["epoch"]))
    finally:
        writer.close()
    return log_dir


def _records(data: bytes) -> Iterable[bytes]:
    """The payloads of a TFRecord file: [len u64][crc u32][payload][crc u32] repeated."""
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        yield data[pos + 12 : pos + 12 + length]
        pos += 12 + length + 4


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in log_dir's event files, in file order."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for payload in _records(path.read_bytes()):
            event = Event.FromString(payload)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((int(event.step), float(v.simple_value)))
    return out


def tensorboard_ui_metadata(source_uri: str) -> dict[str, Any]:
    """The mlpipeline-ui-metadata document that makes the Kubeflow UI offer its TensorBoard
    viewer on `source_uri` (the event files' artifact URI in the store). KFP names MinIO
    artifacts minio://bucket/key; TensorBoard reads the same object as s3://bucket/key."""
    if source_uri.startswith("minio://"):
        source_uri = "s3://" + source_uri.removeprefix("minio://")
    return {"outputs": [{"type": "tensorboard", "source": source_uri}]}
