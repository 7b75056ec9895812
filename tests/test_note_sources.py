"""How a note's sources read to members: readable pages, verified titles and ids, a clean year line in Discord."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bot.cogs.render import sources_lines
from policies.loader import load_policy

# The verified master evidence library, next to the repository (read its README before changing a source).
MASTER_LIBRARY = Path(__file__).resolve().parents[1].parent / "shared" / "evidence" / "citations.yaml"


def test_discord_sources_show_the_year_when_known_and_no_empty_year_otherwise():
    notes = load_policy().notes
    [fda] = sources_lines(notes["buying-online"])[:1]
    assert fda.startswith("1. [About BeSafeRx") and "(https://www.fda.gov/drugs/besaferx" in fda
    assert fda.endswith(": US Food and Drug Administration")
    dated = sources_lines(notes["rapa-wounds"])[0]
    assert dated.rstrip(")").rsplit(", ", 1)[-1][:4].isdigit()


def _shown_citations():
    policy = load_policy()
    assert policy.notes and not policy.withdrawn_notes
    return [(note.id, c) for note in policy.notes.values() for c in note.citations]


@pytest.mark.parametrize("note_id,c", _shown_citations(), ids=lambda v: v if isinstance(v, str) else v.ref)
def test_every_source_a_member_sees_is_a_readable_page_with_verified_ids(note_id, c):
    if not MASTER_LIBRARY.is_file():
        pytest.skip(f"master evidence library not found at {MASTER_LIBRARY}")
    entry = {e["id"]: e for e in yaml.safe_load(MASTER_LIBRARY.read_text(encoding="utf-8"))}[c.ref]
    link = urlsplit(c.link or "")
    assert link.scheme == "https" and link.hostname, f"{note_id}: {c.ref} has no https link"
    assert not link.hostname.startswith("api.") and "eutils" not in link.hostname, f"{note_id}: {c.link} is an API"
    assert not link.path.endswith(".json") and "json" not in link.query.lower(), f"{note_id}: {c.link} returns JSON"
    assert "unverified" not in c.title.lower() and not any(q in c.title for q in "\"\u201c\u201d")
    assert entry["verified"]["ids"] is True and entry["bot_use"] in ("cite", "cite-with-care")
    assert (c.pmid, c.doi) == (entry["pmid"], entry["doi"])
    assert c.title == str(entry["title"]).strip() or not entry["verified"]["title"]
    derived = {f"https://pubmed.ncbi.nlm.nih.gov/{entry['pmid']}/", f"https://doi.org/{entry['doi']}"}
    assert c.link == entry["url"] or c.link in derived, f"{note_id}: {c.link} is not from the library"
