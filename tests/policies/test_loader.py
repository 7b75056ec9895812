"""Loading and validating policies: the shipped set loads; every kind of mistake names file:line and what is wrong."""
from __future__ import annotations

from datetime import date

import pytest
import yaml

from policies.loader import PolicyError, PolicyHolder, load_policy


def test_shipped_policy_loads_with_a_content_hash_version(policy):
    assert policy.version.startswith("pol-")
    assert len(policy.rules) >= 15
    assert set(policy.labels) == {"emergency", "risky_self_treatment", "unsupported_claim", "promotion"}
    for note in policy.notes.values():
        assert note.citations and len(note.text) <= 600


def test_version_changes_when_a_file_changes(policy_dir):
    before = load_policy(policy_dir).version
    path = policy_dir / "community.yaml"
    path.write_text(path.read_text().replace("retention_days: 90", "retention_days: 30"))
    assert load_policy(policy_dir).version != before


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, f"fixture text not found: {old!r}"
    path.write_text(text.replace(old, new, 1))


def _line_of(path, needle):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(needle)


# (file, old text, new text, the line to blame (a substring of it), expected message fragment)
CASES = [
    ("rules.yaml", "    within: 8\n    exceptions: [*warning, *question]\n    weight: 0.6",
     "    within: 8\n    exceptions: [*warning, *question]\n    weight: 0.6\n    colour: red", "colour: red",
     "unknown key 'colour'"),
    ("rules.yaml", "    within: 6\n", "    within: six\n", "within: six", "valid integer"),
    ("rules.yaml", '      - "\\\\bi sell\\\\b"', '      - "(unclosed"', '"(unclosed"', "bad regex"),
    ("rules.yaml", "    note: rapa-wounds\n", "    note: no-such-note\n", "note: no-such-note", "unknown note 'no-such-note'"),
    ("rules.yaml", "  - id: megadose\n    label: risky_self_treatment", "  - id: megadose\n    label: scary",
     "label: scary", "unknown label 'scary'"),
    ("thresholds.yaml", "value: 0.5\n", "value: 1.7\n", "value: 1.7", "less than or equal to 1"),
    ("notes/general.yaml", "    citations:\n      - ref: fda-besaferx\n", "    citations: []\n", "citations: []",
     "at least 1 item"),
    ("notes/general.yaml", "      - ref: fda-besaferx\n", "      - ref: rapamycin-microdepots-hair-UNVERIFIED\n",
     "rapamycin-microdepots-hair-UNVERIFIED", "unverified identifiers"),
    ("notes/general.yaml", "      - ref: fda-besaferx\n", "      - ref: zuk-2011-islet-alopecia\n",
     "zuk-2011-islet-alopecia", "may not be cited (bot_use: background-only)"),
    ("notes/general.yaml", "      - ref: fda-besaferx\n", "      - ref: brewer-2008-sirolimus-derm-surgery\n",
     "brewer-2008-sirolimus-derm-surgery", "cite-with-care: add a caveat"),
    ("notes/general.yaml", "      - ref: fda-besaferx\n", "      - ref: made-up-2024\n", "made-up-2024",
     "not in the evidence library"),
    ("notes/hair.yaml", "    title: Exosome injections and serums", "    title: [unclosed", "title: [unclosed",
     "YAML syntax error"),
    ("policy.yaml", "    default_note: unsupported-claim", "    default_note: nope", "default_note: nope",
     "unknown note 'nope'"),
]


@pytest.mark.parametrize("rel,old,new,blame,message", CASES, ids=[c[4] for c in CASES])
def test_each_mistake_is_reported_with_file_and_line(policy_dir, rel, old, new, blame, message):
    path = policy_dir / rel
    _edit(path, old, new)
    with pytest.raises(PolicyError) as err:
        load_policy(policy_dir)
    expected_line = _line_of(path, blame)
    matching = [i for i in err.value.issues if i.file == rel and message in i.message]
    assert matching, f"no issue with {message!r} in {err.value}"
    assert any(abs(i.line - expected_line) <= 1 for i in matching), f"expected line {expected_line}: {err.value}"


def test_note_past_review_date_is_rejected(policy_dir):
    with pytest.raises(PolicyError) as err:
        load_policy(policy_dir, today=date(2030, 1, 1))
    assert "past its review_by date" in str(err.value)


def test_note_longer_than_600_characters_is_rejected(policy_dir):
    path = policy_dir / "notes" / "general.yaml"
    data = yaml.safe_load(path.read_text())
    data["notes"][0]["text"] = "word " * 130
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as err:
        load_policy(policy_dir)
    assert "notes/general.yaml" in str(err.value) and "at most 600 characters" in str(err.value)


def test_failed_reload_keeps_the_previous_policy(policy_dir):
    holder = PolicyHolder(load_policy(policy_dir))
    before = holder.current
    (policy_dir / "rules.yaml").write_text("rules: [\n")
    with pytest.raises(PolicyError):
        holder.reload()
    assert holder.current is before


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "nope")
    assert "policy directory not found" in str(err.value)


def test_notes_show_only_verified_identifiers(policy):
    import pathlib
    lib = yaml.safe_load((pathlib.Path(policy.directory) / "evidence" / "citations.yaml").read_text())
    entries = {e["id"]: e for e in lib}
    for note in policy.notes.values():
        for c in note.citations:
            entry = entries[c.ref]
            assert entry["verified"]["ids"] is True
            assert entry["bot_use"] in ("cite", "cite-with-care")
            assert (c.pmid, c.doi, c.url) == (entry["pmid"], entry["doi"], entry["url"])
            assert c.title == entry["title"].strip()
