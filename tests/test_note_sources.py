"""How a note's sources read to members in the Discord embed, including sources with no year."""
from __future__ import annotations

from bot.cogs.render import sources_lines
from policies.loader import load_policy


def test_discord_sources_show_the_year_when_known_and_no_empty_year_otherwise():
    notes = load_policy().notes
    [fda] = sources_lines(notes["buying-online"])[:1]
    assert fda.startswith("1. [About BeSafeRx") and "(https://www.fda.gov/drugs/besaferx" in fda
    assert fda.endswith(": US Food and Drug Administration")
    dated = sources_lines(notes["rapa-wounds"])[0]
    assert dated.rstrip(")").rsplit(", ", 1)[-1][:4].isdigit()
