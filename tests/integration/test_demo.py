"""`sir demo` (the README's Try it) against the running platform: every step answers as
the README says, and it prints what it did."""

from services import cli, demo


async def test_the_demo_notifies_sees_the_forwarding_and_deadlines_and_writes_the_report(platform, tmp_path):
    lines: list[str] = []
    made = await demo.run(platform.clients, platform.pool, tmp_path / "national.html", out=lines.append)

    recipients = sorted(d["recipient"] for d in made["deliveries"])
    assert recipients[0] == "scottish-government" and recipients[1].startswith("sog:")  # a MAPPA case
    assert made["deadlines"]
    assert made["report"].read_text().lstrip().lower().startswith("<!doctype html")
    printed = "\n".join(lines)
    assert "sir token issue --role council --local-authority glasgow-city" in printed
    assert f"case {made['case_id']}" in printed and "curl -X POST http://intake/v1/notifications" in printed


def test_sir_demo_says_what_is_wrong_when_the_platform_is_not_running(cli_environment, monkeypatch, capsys, tmp_path):
    from shared.devstack import free_port

    for name in ("INTAKE", "ROUTING", "DEADLINES", "REPORTING"):
        monkeypatch.setenv(f"{name}_PORT", str(free_port()))
    cli.get_settings.cache_clear()
    assert cli.main(["demo", "--output", str(tmp_path / "r.html")]) == 1
    assert "sir demo:" in capsys.readouterr().err
