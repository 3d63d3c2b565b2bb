"""rrsis: language-driven mapping of very large satellite scenes on Ray."""

__version__ = "0.1.0"
