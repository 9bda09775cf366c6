"""recon's test suite (importable as `tests` for shared helpers such as tests.tolerances)."""
