"""ingest: one raw flight (raw_uri/<flight>/) -> one processed shard (Dataset, a directory).

raw_fingerprint is not needed by the body beyond the summary: it is an input so that KFP's
cache key changes when the raw files change (see components/fingerprint.py).
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def ingest(
    raw_uri: str, flight: str, config_json: str, raw_fingerprint: str, shard: Output[Dataset]
) -> int:
    """Turn one raw flight into one processed shard: time matching, label filter,
    preprocessing (cached while the raw files and the config are unchanged).

    Args:
        raw_uri: Where the raw flights live (s3:// or a directory).
        flight: The flight to ingest.
        config_json: The run's validated configuration (preprocessing settings).
        raw_fingerprint: fingerprint's hash of the raw files (part of the cache key).

    Returns:
        shard: <flight>.h5 and <flight>.summary.json (counts kept and dropped by reason).
        Output: The number of samples kept.
    """
    from cloudml.steps import run_ingest

    summary = run_ingest(raw_uri, flight, config_json, shard.path, raw_fingerprint)
    shard.metadata.update(
        {
            "flight": flight,
            "n_samples": int(summary["n_samples"]),
            "raw_fingerprint": raw_fingerprint,
        }
    )
    return int(summary["n_samples"])
