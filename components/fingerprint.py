"""fingerprint: sha256 of one flight's raw files (the stored manifest's hash on MinIO).

Never cached: it is what tells the (cached) ingest task that the raw data changed.
"""

from kfp import dsl

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def fingerprint(raw_uri: str, flight: str) -> str:
    from cloudml.steps import raw_fingerprint

    return raw_fingerprint(raw_uri, flight)
