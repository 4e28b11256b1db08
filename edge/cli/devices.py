"""``edgemed devices``: the detected machine, its backends and the device profile that matches it."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True)
def devices(as_json: bool) -> None:
    """Show the detected machine and the known device profiles."""
    from edgemed.devices.detect import detect, match_profile
    from edgemed.devices.profiles import load_profiles
    from edgemed.runtimes import available_backends

    from ..table import format_table

    machine, profiles = detect(), load_profiles()
    chosen = match_profile(machine, profiles)
    if as_json:
        click.echo(json.dumps({"machine": machine.to_json(), "profile": chosen, "backends": available_backends(),
                               "profiles": profiles}, indent=2))
        return
    m = machine.to_json()
    click.echo(f"machine: {m['cpu_model']} ({m['arch']}, {m['cores']} logical cores)")
    click.echo(f"  ISA: {', '.join(m['isa']) or 'none detected'}; INT8 dot-product units: "
               f"{'yes' if m['int8_dot_product'] else 'no'}")
    click.echo(f"  NVIDIA GPU: {m['nvidia_gpu'] or 'none'}; Jetson: {m['jetson_model'] or 'no'}"
               + (f" (L4T {m['l4t_release']})" if m["l4t_release"] else ""))
    click.echo(f"  OpenVINO devices: {', '.join(m['openvino_devices']) or 'none'}; backends installed: "
               + ", ".join(k for k, v in available_backends().items() if v))
    click.echo(f"  matching profile: {chosen}\n")
    rows = [[("* " if n == chosen else "  ") + n, p["description"],
             " > ".join("/".join(x) for x in p["preference"][:3]), p["latency_budget_ms"]["point-of-care"]]
            for n, p in sorted(profiles.items())]
    click.echo(format_table(["profile", "description", "preference", "PoC budget ms"], rows))
