"""fingerprint: sha256 of one flight's raw files (the stored manifest's hash on MinIO).

Never cached: it is what tells the (cached) ingest task that the raw data changed.
"""

from kfp import dsl

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def fingerprint(raw_uri: str, flight: str) -> str:
    """Hash one flight's raw files, so that ingest's cache key changes when they change.

    Args:
        raw_uri: Where the raw flights live (s3:// or a directory).
        flight: The flight, e.g. 12Feb25.

    Returns:
        Output: sha256 of the flight's raw files (on MinIO: of its stored manifest).
    """
    from cloudml.steps import raw_fingerprint

    return raw_fingerprint(raw_uri, flight)
