"""Artifact storage: local directory or S3/MinIO, manifests, stage-state resume, promotion."""
