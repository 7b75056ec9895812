"""Loading and validating policies: the shipped set loads; every kind of mistake names file:line and what is wrong."""
from __future__ import annotations

from datetime import date

import pytest
import yaml

from policies.loader import PolicyError, PolicyHolder, load_policy, warn_once


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


def _line_of_nth(path, needle, n):
    """Line number of the n-th line (1-based) containing `needle`."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[n - 1]


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
    ("notes/general.yaml", "      - ref: fda-besaferx\n", "      - ref: propecia-label-fda\n", "propecia-label-fda",
     "has no page a member can read"),
    ("notes/hair.yaml", "    title: Exosome injections and serums", "    title: [unclosed", "title: [unclosed",
     "YAML syntax error"),
    ("policy.yaml", "    default_note: unsupported-claim", "    default_note: nope", "default_note: nope",
     "unknown note 'nope'"),
    # Threshold bounds (policy.yaml, per label and band): a value outside them names the thresholds.yaml line.
    ("thresholds.yaml", "value: 0.5\n", "value: 1.0\n", "value: 1.0",
     "rules_only.emergency.escalate: 1 is above the maximum 0.8 that policy.yaml:"),
    ("thresholds.yaml", "value: 0.021733\n", "value: 0.9\n", "value: 0.9",
     "model.emergency.queue: 0.9 is above the maximum 0.5"),
    ("thresholds.yaml", "value: 0.820454\n", "value: 0.312\n", "value: 0.312",
     "model.unsupported_claim.note: 0.312 is below the minimum 0.5"),
    ("policy.yaml", "{threshold: escalate, action: escalate, min: 0.2, max: 0.8}",
     "{threshold: escalate, action: escalate, min: 0.2}", "threshold: escalate, action: escalate, min: 0.2}",
     "the escalate band needs a max below 1.0"),
    ("policy.yaml", "{threshold: queue, action: queue, min: 0.01, max: 0.5}",
     "{threshold: queue, action: queue, min: 0.6, max: 0.5}", "min: 0.6, max: 0.5", "min 0.6 is above max 0.5"),
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


def test_a_note_past_review_by_is_withdrawn_and_the_policy_still_loads(policy_dir):
    policy = load_policy(policy_dir, today=date(2027, 6, 1))  # every shipped note has review_by 2027-05-22
    assert "exosomes" not in policy.notes and policy.withdrawn_notes["exosomes"] == date(2027, 5, 22)
    assert policy.note("exosomes") is None
    line = _line_of_nth(policy_dir / "notes" / "hair.yaml", "review_by:", 1)
    assert ("note 'exosomes' passed its review_by date 2027-05-22 and is withdrawn: no member will be shown it "
            "until it is reviewed (") in " ".join(policy.warnings)
    assert any(w.startswith("note 'exosomes'") and w.endswith(f"notes/hair.yaml:{line})") for w in policy.warnings)
    assert len(policy.warnings) == len(policy.withdrawn_notes)
    # Rules and labels that name a withdrawn note still validate: the note exists, it is only withdrawn.
    assert any(r.note == "exosomes" for r in policy.rules) and policy.labels["promotion"].default_note == "buying-online"


def test_only_the_expired_note_is_withdrawn(policy_dir):
    _edit(policy_dir / "notes" / "hair.yaml", "review_by: 2027-05-22", "review_by: 2026-12-01")  # exosomes
    policy = load_policy(policy_dir, today=date(2026, 12, 7))
    assert list(policy.withdrawn_notes) == ["exosomes"] and len(policy.warnings) == 1
    assert policy.note("rapa-wounds") is policy.notes["rapa-wounds"]


@pytest.mark.parametrize("today,expected", [
    (date(2027, 4, 21), None), (date(2027, 4, 22), "expires in 30 days"), (date(2027, 5, 21), "expires in 1 day"),
    (date(2027, 5, 22), "expires today"),
])
def test_a_note_close_to_review_by_warns_but_is_shown(policy_dir, today, expected):
    policy = load_policy(policy_dir, today=today)
    assert policy.note("exosomes") is not None and not policy.withdrawn_notes
    if expected is None:
        assert policy.warnings == ()
    else:
        assert any(w.startswith(f"note 'exosomes' {expected} (review_by 2027-05-22)") for w in policy.warnings)


def test_unknown_note_is_none(policy):
    assert policy.note("no-such-note") is None and policy.note(None) is None


def test_warnings_are_printed_once_and_logged_with_note_ids_only(policy_dir, capsys, caplog):
    policy = load_policy(policy_dir, today=date(2027, 6, 1))
    warn_once(policy)
    warn_once(policy)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(policy.warnings) and all("withdrawn" in line for line in err)
    [record] = [r for r in caplog.records if r.name == "caveat.policy"]
    assert record.getMessage().startswith("notes withdrawn, past review_by: buying-online, exosomes")


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
            assert (c.pmid, c.doi) == (entry["pmid"], entry["doi"])
            assert c.url in (entry["url"], f"https://pubmed.ncbi.nlm.nih.gov/{entry['pmid']}/", f"https://doi.org/{entry['doi']}")
            assert c.title == entry["title"].strip() or not entry["verified"]["title"]


def _library_edit(policy_dir, ref, **fields):
    """Change one evidence-library entry in the policy copy."""
    path = policy_dir / "evidence" / "citations.yaml"
    lib = yaml.safe_load(path.read_text())
    next(e for e in lib if e["id"] == ref).update(fields)
    path.write_text(yaml.safe_dump(lib, sort_keys=False))


def test_a_json_api_url_is_replaced_by_the_pubmed_page_of_its_verified_pmid(policy_dir):
    _library_edit(policy_dir, "suzuki-2023-mtorc1-hair-follicle",
                  url="https://eutils.ncbi.nlm.nih.gov/entrez/eutils/esummary.fcgi?db=pubmed&id=37212043&retmode=json")
    [suzuki] = [c for c in load_policy(policy_dir).notes["rapa-hair"].citations if c.ref.startswith("suzuki")]
    assert suzuki.url == suzuki.link == "https://pubmed.ncbi.nlm.nih.gov/37212043/"


def test_an_unverified_title_is_shown_as_a_plain_description(policy_dir):
    _library_edit(policy_dir, "gao-2018-mtori-lam-meta", title="unverified exact title (a meta-analysis)",
                  verified={"title": False, "ids": True})
    [gao] = [c for c in load_policy(policy_dir).notes["rapa-oral-side-effects"].citations if c.ref.startswith("gao")]
    assert gao.title == "Journal article in Orphanet Journal of Rare Diseases (2018)"
    assert gao.doi == "10.1186/s13023-018-0874-7" and gao.url == "https://pmc.ncbi.nlm.nih.gov/articles/PMC6092843"


def test_bounds_name_the_policy_line_and_a_value_on_the_bound_loads(policy_dir):
    policy_yaml = policy_dir / "policy.yaml"
    _edit(policy_dir / "thresholds.yaml", "value: 0.5\n", "value: 0.81\n")   # rules_only emergency escalate
    with pytest.raises(PolicyError) as err:
        load_policy(policy_dir)
    [issue] = err.value.issues
    band_line = _line_of(policy_yaml, "{threshold: escalate, action: escalate")
    assert f"that policy.yaml:{band_line} allows for the emergency escalate threshold" in issue.message
    _edit(policy_dir / "thresholds.yaml", "value: 0.81\n", "value: 0.8\n")
    policy = load_policy(policy_dir)
    assert policy.bounds("emergency", "escalate") == (0.2, 0.8)
    assert policy.bounds("emergency", "queue") == (0.01, 0.5)
    assert policy.bounds("promotion", "note") == (0.5, 1.0)


def test_at_the_highest_thresholds_the_bounds_allow_the_crisis_lane_still_works(policy_dir):
    """Bounds are there so that no saved value can switch the emergency lane off: check the worst case."""
    from bot.engine import Engine, Post
    shipped = load_policy(policy_dir)
    path = policy_dir / "thresholds.yaml"
    data = yaml.safe_load(path.read_text())
    for mode in ("rules_only", "model"):
        for band in ("escalate", "queue"):
            data["thresholds"][mode]["emergency"][band]["value"] = shipped.bounds("emergency", band)[1]
    path.write_text(yaml.safe_dump(data))
    (policy_dir / "combine.yaml").write_text("combine:\n  labels: {}\n")  # raw model probabilities
    engine = Engine(load_policy(policy_dir))
    crisis = Post("t", "1", "c", "u", "I want to kill myself tonight")
    assert engine.assess(crisis).action == "escalate"       # rules only: one crisis-rule hit scores 0.8
    quiet = Post("t", "2", "c", "u", "everything feels heavy and I keep thinking about not waking up")
    scores = {"emergency": 0.55, "risky_self_treatment": 0.0, "unsupported_claim": 0.0, "promotion": 0.0}
    assert engine.assess(quiet, scores, model_version="m").action == "queue"    # more likely than not: queued
    assert engine.assess(quiet, dict(scores, emergency=0.85), model_version="m").action == "escalate"


@pytest.mark.parametrize("edit, message", [
    (lambda d: (d / "rules.yaml").write_bytes((d / "rules.yaml").read_bytes() + b"\n# caf\xe9\n"), "rules.yaml:"),
    (lambda d: (d / "notes" / "hair.yaml").write_text(
        (d / "notes" / "hair.yaml").read_text().replace("review_by: 2027-05-22", "review_by: 2027-13-45", 1)),
     "invalid value"),
    (lambda d: (d / "thresholds.yaml").write_text("thresholds:\n  model: 0.5\n"), "must be a mapping of labels"),
])
def test_odd_files_give_a_policy_error_never_a_crash(policy_dir, edit, message):
    edit(policy_dir)
    with pytest.raises(PolicyError) as err:
        load_policy(policy_dir)
    assert message in "\n".join(str(i) for i in err.value.issues)


def test_a_malformed_evidence_entry_is_a_policy_error(policy_dir):
    path = policy_dir / "evidence" / "citations.yaml"
    text = path.read_text()
    first = next(line for line in text.splitlines() if line.strip().startswith("pmid:") and line.split(":", 1)[1].strip())
    path.write_text(text.replace(first, first.split(":")[0] + ": {}", 1))
    with pytest.raises(PolicyError) as err:
        load_policy(policy_dir)
    assert "is malformed" in "\n".join(str(i) for i in err.value.issues)
