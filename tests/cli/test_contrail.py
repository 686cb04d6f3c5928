"""`knm contrail sync` and `knm applier --backend`: what a user sees."""

from __future__ import annotations

from pathlib import Path

from knm.testing.vnc_server import VncTestServer
from tests.cli.test_commands import knm

EXAMPLE = Path(__file__).parents[2] / "knm" / "examples" / "k8petstore"


def test_sync_dry_run_prints_the_calls_and_writes_nothing_then_sync_converges() -> None:
    with VncTestServer() as server:
        dry = knm("contrail", "sync", "-f", str(EXAMPLE), "--url", server.url, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert sum(line.startswith("create") for line in lines) == 44
        assert "create     project default-domain:default" in lines
        assert lines[-1] == "8 pods, 4 services: 1 objects listed, would make 44 writes"
        assert server.writes == 0
        real = knm("contrail", "sync", "-f", str(EXAMPLE), "--url", server.url)
        assert real.returncode == 0, real.stderr
        assert real.stdout.splitlines()[-1].endswith("made 44 writes")
        assert server.writes == 44
        again = knm("contrail", "sync", "-f", str(EXAMPLE), "--url", server.url, "--dry-run")
        assert again.stdout.splitlines() == [
            "8 pods, 4 services: 45 objects listed, would make 0 writes"
        ]


def test_bad_input_gets_one_line_and_exit_code_2(tmp_path: Path) -> None:
    bogus = knm("applier", "--backend", "bogus")
    assert bogus.returncode == 2
    assert bogus.stderr.strip() == "knm: unknown backend 'bogus': choose from native, contrail"
    url = knm("contrail", "sync", "-f", str(EXAMPLE), "--url", "ftp://nowhere")
    assert url.returncode == 2
    assert "not a VNC API URL" in url.stderr
    missing = knm("contrail", "sync", "-f", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2
    assert len(missing.stderr.splitlines()) == 1
