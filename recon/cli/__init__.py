"""The `recon` command line."""
