"""What every ``fleetml train`` command prints on stderr after training (stdout keeps the JSON)."""

from __future__ import annotations

import click


def echo_training_outcome(result: dict, details: list[str] = ()) -> None:
    """Family-specific ``details``, every warning, then the registration and promotion outcome.

    Warnings come first and plainly ("warning: ..."): a first version promoted although its gate
    failed, a version refused by its sanity check, a risk horizon without positive rows.
    """
    for line in details:
        click.echo(line, err=True)
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    champion = result.get("champion")
    if isinstance(champion, bool):  # `train forecast` reports whether it became champion
        champion = result["version"] if champion else result.get("previous_champion")
    click.echo(
        f"registered {result['model']} version {result['version']} (run {result['run_id']}); "
        + (f"champion is version {champion}" if champion is not None else "no champion")
        + f": {result['promotion_reason']}",
        err=True,
    )
