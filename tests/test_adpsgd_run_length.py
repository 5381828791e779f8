"""AD-PSGD's automatic delay sizes its ping table for the whole run (its pong delays have no
other bound): `divjax run` says so and names the flag that bounds it, and a bound too short for
the run's links is an error naming that flag, never a dropped message (docs/scaling.md)."""

from divjax.frontends import cli

RUN = ["run", "--algorithm", "adpsgd", "--task", "synthetic", "--n-nodes", "16"]


def test_adpsgd_auto_delay__the_run_says_its_sizes_follow_the_run_length(capsys):
    assert cli.main(RUN + ["--duration-s", "20", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "note: AD-PSGD" in out and "whole run (400 ticks)" in out and "--delay-ticks" in out
    assert cli.main(RUN + ["--duration-s", "20", "--delay-ticks", "20", "--dry-run"]) == 0
    assert "note: AD-PSGD" not in capsys.readouterr().out


def test_adpsgd_delay_bound_too_short__is_an_error_naming_the_flag(tmp_path, capsys):
    code = cli.main(RUN + ["--duration-s", "4", "--delay-ticks", "2", "--fast-mbps", "0.01",
                           "--straggler-mbps", "0.005", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code != 0
    assert "raise --delay-ticks" in captured.out + captured.err
