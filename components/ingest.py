"""ingest: one raw flight (raw_uri/<flight>/) -> one processed shard (Dataset, a directory)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from cloudml.platform import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def ingest(raw_uri: str, flight: str, config_json: str, shard: Output[Dataset]) -> int:
    """Returns the number of samples kept."""
    from cloudml.pipeline_steps import run_ingest

    summary = run_ingest(raw_uri, flight, config_json, shard.path)
    shard.metadata.update({"flight": flight, "n_samples": int(summary["n_samples"])})
    return int(summary["n_samples"])
