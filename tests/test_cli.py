"""The command line's own parsing (pipeline/cli.py): what a user types, not what a stage does."""

from __future__ import annotations

import pytest

from pipeline.cli import build_parser


@pytest.mark.parametrize("argv,verbose", [
    (["run", "curry", "-v"], True),          # after the subcommand: was "unrecognized arguments: -v"
    (["inspect", "data/release", "--verbose"], True),
    (["audit", "-v"], True),
    (["-v", "run", "curry"], True),          # before it, as the README shows
    (["--verbose", "audit"], True),
    (["run", "curry"], False),
    (["publish", "--repo-id", "org/name", "--dry-run"], False),
])
def test_verbose_is_taken_before_or_after_the_subcommand(argv, verbose):
    assert build_parser().parse_args(argv).verbose is verbose


def test_the_top_level_help_says_where_to_start(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "dvc repro" in out and "SUB --help" in out
