"""Helpers shared by the CLI tests."""


def train_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """``recon train ARGV`` in this process: its exit code and the last line it printed (the run directory)."""
    from recon.cli import train as train_cli

    code = train_cli.main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return code, out[-1] if out else ""
