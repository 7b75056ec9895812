"""Load and validate the policy directory into an immutable, content-hashed PolicySet."""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, TextIO
from urllib.parse import urlsplit

import re2
import yaml
from pydantic import BaseModel, ValidationError

from policies.schema import (
    LABELS, Citation, Combine, CommunitySettings, LabelPolicy, Note, NoteSource, OperatingPoint, Rule,
)
from policies.settings import load_settings

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent
CITABLE = {"cite", "cite-with-care"}
CRISIS_LABEL = "emergency"   # its bands need a max below 1.0: no threshold may switch the crisis lane off
EXPIRY_WARNING_DAYS = 30
log = logging.getLogger("caveat.policy")


@dataclass(frozen=True)
class PolicyIssue:
    """One problem found in a policy file, with its location."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyError(Exception):
    """Raised when a policy directory is invalid; lists every problem as file:line: message."""

    def __init__(self, issues: list[PolicyIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class PolicySet:
    """Everything the engine needs, validated, immutable, and identified by `version`."""

    version: str
    directory: str
    labels: Mapping[str, LabelPolicy]
    rules: tuple[Rule, ...]
    thresholds: Mapping[str, Mapping[str, Mapping[str, OperatingPoint]]]
    notes: Mapping[str, Note]  # usable notes only; pick one with `note()`, which also withholds any expired since load
    community: CommunitySettings
    files: tuple[str, ...] = field(default=())
    combine: Combine = field(default_factory=Combine)
    # Notes past review_by on `as_of` (id -> review_by): they stay in the files and validate, but are never shown.
    withdrawn_notes: Mapping[str, date] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()
    as_of: date = field(default_factory=date.today)

    def withdrawn(self, note_id: str) -> date | None:
        """The review_by date of `note_id` if it is withdrawn (at load, or since: a bot runs for weeks), else None."""
        if note_id in self.withdrawn_notes:
            return self.withdrawn_notes[note_id]
        note = self.notes.get(note_id)
        return note.review_by if note is not None and note.review_by < max(self.as_of, date.today()) else None

    def note(self, note_id: str | None) -> Note | None:
        """The note a member may be shown: None when `note_id` is unknown or withdrawn."""
        if not note_id or self.withdrawn(note_id):
            return None
        return self.notes.get(note_id)

    def threshold(self, mode: str, label: str, band: str) -> OperatingPoint | None:
        """The operating point for `label`/`band` in `mode` ('model' or 'rules_only')."""
        return self.thresholds.get(mode, {}).get(label, {}).get(band)

    def bounds(self, label: str, band: str) -> tuple[float, float]:
        """The (min, max) that policy.yaml allows for `label`'s `band` threshold in every mode ((0, 1) if unbounded)."""
        lp = self.labels.get(label)
        found = next((b for b in lp.bands if b.threshold == band), None) if lp is not None else None
        return (found.min, found.max) if found is not None else (0.0, 1.0)


class _Doc:
    """A parsed YAML file that remembers the line of every node for error messages."""

    def __init__(self, path: Path, rel: str, issues: list[PolicyIssue]):
        self.rel = rel
        self.data: Any = None
        self.root = None
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            issues.append(PolicyIssue(rel, line, f"not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"))
            return
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = mark.line + 1 if mark else 1
            problem = getattr(exc, "problem", None) or str(exc)
            issues.append(PolicyIssue(rel, line, f"YAML syntax error: {problem}"))
        except ValueError as exc:  # a scalar YAML resolves but Python refuses, e.g. the date 2026-13-45
            self.root, self.data = None, None
            issues.append(PolicyIssue(rel, 1, f"invalid value: {exc}"))

    def line(self, *path: Any) -> int:
        """Line of the node at `path` (keys and list indexes), or of its nearest existing parent."""
        node = self.root
        best = node.start_mark.line + 1 if node is not None else 1
        for key in path:
            if isinstance(node, yaml.MappingNode):
                found = None
                for k, v in node.value:
                    if k.value == key:
                        found = (k, v)
                        break
                if found is None:
                    break
                best = found[0].start_mark.line + 1
                node = found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                best = node.start_mark.line + 1
            else:
                break
        return best


def _validate(model: type[BaseModel], data: Any, doc: _Doc, prefix: tuple, issues: list[PolicyIssue]):
    """Validate `data` as `model`; turn pydantic errors into file:line issues."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = prefix + tuple(err["loc"])
            where = ".".join(str(p) for p in loc)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key '{loc[-1]}'"
                where = ".".join(str(p) for p in loc[:-1]) or "(top level)"
            issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"{where}: {msg}"))
        return None


def _expect_mapping(doc: _Doc, key: str, issues: list[PolicyIssue]) -> Any:
    """What the top-level mapping holds under `key` (callers check its type), or {} and an issue saying it is
    missing."""
    if doc.data is None and doc.root is None:
        return {}
    if not isinstance(doc.data, dict) or key not in doc.data:
        issues.append(PolicyIssue(doc.rel, 1, f"missing top-level key '{key}'"))
        return {}
    # Top-level keys starting with "x-" hold YAML anchors shared by entries (e.g. exception lists).
    extra = [k for k in doc.data if k != key and not str(k).startswith("x-")]
    for k in extra:
        issues.append(PolicyIssue(doc.rel, doc.line(k), f"unknown key '{k}'"))
    return doc.data[key]


def _resolve_citation(ref: Any, note_topic: str, library: dict, doc: _Doc, loc: tuple,
                      issues: list[PolicyIssue]) -> Citation | None:
    """Turn a note's citation ref into a Citation using only verified library fields; a malformed library
    entry (a field of the wrong type or missing) is a PolicyIssue, never a crash."""
    try:
        return _citation(ref, note_topic, library, doc, loc, issues)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"evidence library entry '{ref.ref}' is malformed"
                                  f" ({type(exc).__name__}: {exc})"))
        return None


def _citation(ref: Any, note_topic: str, library: dict, doc: _Doc, loc: tuple,
              issues: list[PolicyIssue]) -> Citation | None:
    entry = library.get(ref.ref)
    if entry is None:
        issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"citation '{ref.ref}' is not in the evidence library"))
        return None
    if not isinstance(entry, dict):
        issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"evidence library entry '{ref.ref}' is not a mapping"))
        return None
    verified = entry.get("verified") or {}
    if not verified.get("ids"):
        issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"citation '{ref.ref}' has unverified identifiers"))
        return None
    use = entry.get("bot_use")
    if use not in CITABLE:
        issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"citation '{ref.ref}' may not be cited (bot_use: {use})"))
        return None
    if use == "cite-with-care" and not ref.caveat:
        issues.append(PolicyIssue(doc.rel, doc.line(*loc),
                                  f"citation '{ref.ref}' is cite-with-care: add a caveat saying the limits of the evidence"))
        return None
    link = _readable_link(entry)
    if link is None:
        issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"citation '{ref.ref}' has no page a member can read "
                                  "(its URL is missing, not https or a JSON API, and it has no PMID or DOI)"))
        return None
    year = str(entry.get("year") or "")
    year = year[:4] if year[:4].isdigit() else ("current label" if year.startswith("current label") else "")
    source = str(entry.get("journal_or_publisher", ""))
    # An unverified title is never shown as if it were the exact title: describe the source from verified fields.
    title = str(entry["title"]).strip() if verified.get("title") else _description(entry, source, year)
    try:
        return Citation(ref=ref.ref, title=title, source=source, year=year, pmid=entry.get("pmid"),
                        doi=entry.get("doi"), url=link, caveat=ref.caveat)
    except ValidationError as exc:  # e.g. a pmid that is a mapping: the library entry is malformed
        issues.append(PolicyIssue(doc.rel, doc.line(*loc), f"evidence library entry '{ref.ref}' is malformed: "
                                  + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())))
        return None


def is_json_api(url: str) -> bool:
    """Does `url` point at a machine API (api.* host, eutils, .json, format=json) rather than a page?"""
    parts = urlsplit(url)
    host, query = (parts.hostname or "").lower(), parts.query.lower()
    return (host.startswith("api.") or "eutils" in host or parts.path.lower().endswith(".json")
            or any(k in query for k in ("format=json", "retmode=json", "rettype=json")))


def _readable_link(entry: dict) -> str | None:
    """The page a member can open: the library's https URL unless it is an API, else PubMed or doi.org from a verified id."""
    url = str(entry.get("url") or "")
    if url.startswith("https://") and not is_json_api(url):
        return url
    if entry.get("pmid"):
        return f"https://pubmed.ncbi.nlm.nih.gov/{entry['pmid']}/"
    if entry.get("doi"):
        return f"https://doi.org/{entry['doi']}"
    return None


def _description(entry: dict, source: str, year: str) -> str:
    """A plain description of a source whose exact title is unverified, e.g. 'Journal article in GeroScience (2023)'."""
    if entry.get("pmid") or entry.get("doi"):
        kind = "Journal article in"
    elif year == "current label":
        kind = "Drug label from"
    else:
        kind = "Page from"
    text = f"{kind} {source}" + (f" ({year})" if year else "")
    return text.translate({ord(q): None for q in "\"'\u2018\u2019\u201c\u201d"})


def load_policy(directory: str | os.PathLike | None = None, *, today: date | None = None) -> PolicySet:
    """Load `directory` (default: the shipped policies); raise PolicyError listing every problem."""
    root = Path(directory or load_settings().policy_dir or DEFAULT_POLICY_DIR)
    today = today or date.today()
    issues: list[PolicyIssue] = []
    if not root.is_dir():
        raise PolicyError([PolicyIssue(str(root), 0, "policy directory not found")])

    def doc(rel: str, required: bool = True) -> _Doc | None:
        path = root / rel
        if not path.is_file():
            if required:
                issues.append(PolicyIssue(rel, 0, "file not found"))
            return None
        return _Doc(path, rel, issues)

    hasher = hashlib.sha256()
    files = ["policy.yaml", "rules.yaml", "thresholds.yaml", "community.yaml", "evidence/citations.yaml", "combine.yaml"]
    note_files = sorted(str(p.relative_to(root)) for p in (root / "notes").glob("*.yaml"))
    for rel in files + note_files:
        path = root / rel
        if path.is_file():
            hasher.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")

    policy_doc, rules_doc, thr_doc, comm_doc = (doc(f) for f in files[:4])
    evidence_doc = doc("evidence/citations.yaml")
    library = {e["id"]: e for e in (evidence_doc.data or [])} if evidence_doc and isinstance(evidence_doc.data, list) else {}

    # Notes first: rules and labels refer to them.
    notes: dict[str, Note] = {}
    withdrawn: dict[str, date] = {}
    warnings: list[str] = []
    if not note_files:
        issues.append(PolicyIssue("notes/", 0, "no caution notes found"))
    for rel in note_files:
        nd = doc(rel)
        if nd is None or nd.root is None:
            continue
        raw_notes = _expect_mapping(nd, "notes", issues)
        if not isinstance(raw_notes, list):
            issues.append(PolicyIssue(rel, nd.line("notes"), "notes: must be a list"))
            continue
        for i, raw in enumerate(raw_notes):
            src = _validate(NoteSource, raw, nd, ("notes", i), issues)
            if src is None:
                continue
            if src.id in notes or src.id in withdrawn:
                issues.append(PolicyIssue(rel, nd.line("notes", i, "id"), f"duplicate note id '{src.id}'"))
            cites = [_resolve_citation(c, src.topic, library, nd, ("notes", i, "citations", j), issues)
                     for j, c in enumerate(src.citations)]
            if not all(cites):
                continue
            # A note past review_by is withdrawn, not an error: the rest of the policy (the crisis lane above all)
            # must keep running on the day a note expires.
            where = f"{_shown_path(root / rel)}:{nd.line('notes', i, 'review_by')}"
            days = (src.review_by - today).days
            if days < 0:
                withdrawn[src.id] = src.review_by
                warnings.append(f"note '{src.id}' passed its review_by date {src.review_by} and is withdrawn: "
                                f"no member will be shown it until it is reviewed ({where})")
                continue
            if days <= EXPIRY_WARNING_DAYS:
                when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
                warnings.append(f"note '{src.id}' expires {when} (review_by {src.review_by}): review it and move "
                                f"review_by forward, or it will be withdrawn ({where})")
            notes[src.id] = Note(id=src.id, topic=src.topic, title=src.title, text=src.text.strip(),
                                 citations=tuple(cites), reviewed_on=src.reviewed_on, review_by=src.review_by)

    labels: dict[str, LabelPolicy] = {}
    if policy_doc:
        raw_labels = _expect_mapping(policy_doc, "labels", issues)
        for name, raw in (raw_labels or {}).items():
            if name not in LABELS:
                issues.append(PolicyIssue(policy_doc.rel, policy_doc.line("labels", name),
                                          f"unknown label '{name}' (known: {', '.join(LABELS)})"))
                continue
            lp = _validate(LabelPolicy, raw, policy_doc, ("labels", name), issues)
            if lp is None:
                continue
            if name == CRISIS_LABEL:
                for i, band in enumerate(lp.bands):
                    if band.max >= 1.0:
                        issues.append(PolicyIssue(policy_doc.rel, policy_doc.line("labels", name, "bands", i),
                                                  f"labels.{name}.bands.{i}: the {band.threshold} band needs a max "
                                                  f"below 1.0 (e.g. max: 0.9) so that no threshold can switch the "
                                                  f"crisis lane off"))
            if lp.default_note and lp.default_note not in notes and lp.default_note not in withdrawn:
                issues.append(PolicyIssue(policy_doc.rel, policy_doc.line("labels", name, "default_note"),
                                          f"label '{name}' names unknown note '{lp.default_note}'"))
            labels[name] = lp
        for name in LABELS:
            if raw_labels is not None and name not in labels and name not in (raw_labels or {}):
                issues.append(PolicyIssue(policy_doc.rel, policy_doc.line("labels"), f"label '{name}' has no policy"))

    rules: list[Rule] = []
    if rules_doc:
        raw_rules = _expect_mapping(rules_doc, "rules", issues)
        if not isinstance(raw_rules, list):
            issues.append(PolicyIssue(rules_doc.rel, rules_doc.line("rules"), "rules: must be a list"))
            raw_rules = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_rules):
            if isinstance(raw, dict) and "label" in raw and raw["label"] not in LABELS:
                issues.append(PolicyIssue(rules_doc.rel, rules_doc.line("rules", i, "label"),
                                          f"rules.{i}: unknown label '{raw['label']}' (known: {', '.join(LABELS)})"))
                continue
            rule = _validate(Rule, raw, rules_doc, ("rules", i), issues)
            if rule is None:
                continue
            if rule.id in seen:
                issues.append(PolicyIssue(rules_doc.rel, rules_doc.line("rules", i, "id"), f"duplicate rule id '{rule.id}'"))
            seen.add(rule.id)
            if not rule.terms and not rule.patterns:
                issues.append(PolicyIssue(rules_doc.rel, rules_doc.line("rules", i),
                                          f"rule '{rule.id}' needs terms or patterns"))
            if rule.note and rule.note not in notes and rule.note not in withdrawn:
                issues.append(PolicyIssue(rules_doc.rel, rules_doc.line("rules", i, "note"),
                                          f"rule '{rule.id}' names unknown note '{rule.note}'"))
            for key in ("patterns", "exceptions"):
                for j, pattern in enumerate(getattr(rule, key)):
                    try:
                        re2.compile(pattern)
                    except Exception as exc:  # re2 raises its own error type
                        issues.append(PolicyIssue(rules_doc.rel, rules_doc.line("rules", i, key, j),
                                                  f"rule '{rule.id}' {key}[{j}]: bad regex {pattern!r}: {exc}"))
            rules.append(rule)

    thresholds: dict[str, dict[str, dict[str, OperatingPoint]]] = {}
    if thr_doc:
        raw_thr = _expect_mapping(thr_doc, "thresholds", issues) or {}
        if not isinstance(raw_thr, dict):
            issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds"), "thresholds: must be a mapping of modes"))
            raw_thr = {}
        for mode, per_label in raw_thr.items():
            if not isinstance(per_label or {}, dict):
                issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds", mode),
                                          f"thresholds.{mode}: must be a mapping of labels"))
                continue
            if mode not in ("model", "rules_only"):
                issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds", mode),
                                          f"unknown threshold set '{mode}' (known: model, rules_only)"))
                continue
            for label, bands in (per_label or {}).items():
                if label not in LABELS:
                    issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds", mode, label), f"unknown label '{label}'"))
                    continue
                if not isinstance(bands or {}, dict):
                    issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds", mode, label),
                                              f"thresholds.{mode}.{label}: must be a mapping of bands"))
                    continue
                for band, raw in (bands or {}).items():
                    if band not in ("note", "queue", "escalate"):
                        issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds", mode, label, band),
                                                  f"unknown band '{band}' (known: note, queue, escalate)"))
                        continue
                    op = _validate(OperatingPoint, raw, thr_doc, ("thresholds", mode, label, band), issues)
                    if op is not None:
                        thresholds.setdefault(mode, {}).setdefault(label, {})[band] = op
        for name, lp in labels.items():
            for band in lp.bands:
                if band.threshold not in thresholds.get("rules_only", {}).get(name, {}):
                    issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds", "rules_only"),
                                              f"rules_only.{name}.{band.threshold}: missing threshold"))
        issues.extend(_out_of_bounds(thresholds, labels, thr_doc, policy_doc))

    community = None
    if comm_doc:
        community = _validate(CommunitySettings, _expect_mapping(comm_doc, "community", issues), comm_doc,
                              ("community",), issues)
        if community and community.default_locale not in community.crisis_resources:
            issues.append(PolicyIssue(comm_doc.rel, comm_doc.line("community", "default_locale"),
                                      f"no crisis_resources for default_locale '{community.default_locale}'"))

    combine = Combine()
    comb_doc = doc("combine.yaml", required=False)
    if comb_doc and comb_doc.root is not None:
        combine = _validate(Combine, _expect_mapping(comb_doc, "combine", issues), comb_doc, ("combine",), issues) or combine

    if issues or community is None:  # community.yaml is required: when it is missing, issues says so
        raise PolicyError(issues or [PolicyIssue("community.yaml", 0, "no community settings")])
    return PolicySet(
        version="pol-" + hasher.hexdigest()[:12], directory=str(root),
        labels=MappingProxyType(labels), rules=tuple(rules),
        thresholds=MappingProxyType({m: MappingProxyType({lab: MappingProxyType(b) for lab, b in per.items()})
                                     for m, per in thresholds.items()}),
        notes=MappingProxyType(notes), community=community,
        files=tuple(f for f in files if f != "combine.yaml" or (root / f).is_file()) + tuple(note_files),
        combine=combine, withdrawn_notes=MappingProxyType(withdrawn), warnings=tuple(warnings), as_of=today,
    )


def _out_of_bounds(thresholds: dict, labels: dict[str, LabelPolicy], thr_doc: _Doc,
                   policy_doc: _Doc | None) -> list[PolicyIssue]:
    """Operating points outside the min/max their label's band sets in policy.yaml."""
    issues = []
    for mode, per_label in thresholds.items():
        for label, per_band in per_label.items():
            lp = labels.get(label)
            for band_name, op in per_band.items():
                i, band = next(((i, b) for i, b in enumerate(lp.bands if lp else ()) if b.threshold == band_name),
                               (None, None))
                if band is None or band.min <= op.value <= band.max:
                    continue
                which, bound = ("below the minimum", band.min) if op.value < band.min else ("above the maximum", band.max)
                where = f"{policy_doc.rel}:{policy_doc.line('labels', label, 'bands', i)}" if policy_doc else "policy.yaml"
                issues.append(PolicyIssue(thr_doc.rel, thr_doc.line("thresholds", mode, label, band_name, "value"),
                                          f"{mode}.{label}.{band_name}: {op.value:g} is {which} {bound:g} that "
                                          f"{where} allows for the {label} {band_name} threshold"))
    return issues


def _shown_path(path: Path) -> str:
    """`path` as a person at this shell would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


_warned: set[tuple] = set()


def warn_once(policy: PolicySet, file: TextIO | None = None) -> None:
    """Print each policy warning to stderr (and log the note ids) once per process for this policy and day."""
    key = (policy.directory, policy.version, policy.as_of, policy.warnings)
    if not policy.warnings or key in _warned:
        return
    _warned.add(key)
    out = file or sys.stderr
    for warning in policy.warnings:
        print(f"caveat: policy warning: {warning}", file=out)
    if policy.withdrawn_notes:
        log.warning("notes withdrawn, past review_by: %s", ", ".join(sorted(policy.withdrawn_notes)))
    expiring = sorted(n.id for n in policy.notes.values()
                      if (n.review_by - policy.as_of).days <= EXPIRY_WARNING_DAYS)
    if expiring:
        log.warning("notes expiring within %d days: %s", EXPIRY_WARNING_DAYS, ", ".join(expiring))


class PolicyHolder:
    """Keeps the PolicySet in force; a failed reload raises and leaves the previous one in place."""

    def __init__(self, policy: PolicySet):
        self.current = policy
        #: Where reloads read from: the configured policy directory, also after following a policy published by
        #: another process (whose files this process keeps in a private folder).
        self.source = policy.directory

    def reload(self, directory: str | os.PathLike | None = None) -> PolicySet:
        """Load again from `directory` (default: the configured one); keep the old set on error."""
        self.current = load_policy(directory or self.source)
        warn_once(self.current)
        return self.current
