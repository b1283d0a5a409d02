"""CloudML: cloud-base-height retrieval from ER-2 IRAI thermal imagery, labelled by CPL."""

__version__ = "0.1.0"
