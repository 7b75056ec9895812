"""Write map-<source>.jsonl: label rows mapped from each public dataset's own labels (no post text).

Run from the project root: `python classifiers/data/real/build_map.py [DATA_DIR]`. Hand relabels in
`hand-*.jsonl` override these rows (see classifiers/realdata.py). The mapping is deliberately conservative:
sources whose own labels say little about our labels (peptides/nootropics, OpiatesRecovery, isotretinoin,
GLP-1, health-misinformation Reddit, self-medication claims) are used only where a person labelled the row.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from classifiers.realdata import default_data_dir, read_jsonl  # noqa: E402

# source -> {source label: (our label, weight, why)}; a missing source label means "not used". The weight says how
# far the source's label can be trusted as ours; hand labels (weight 1.0, or 0.7 when borderline) override these.
MAP: dict[str, str | dict[str, tuple[str, float, str]]] = {
    "cssrs_posts": {"supportive": ("benign", 1.0, "C-SSRS supportive reply"),
                    "uninformative": ("benign", 1.0, "C-SSRS uninformative"),
                    "indicator": ("benign", 0.7, "C-SSRS risk indicator without ideation"),
                    "ideation": ("emergency", 0.5, "C-SSRS ideation (weak: may be past)"),
                    "behavior": ("emergency", 0.5, "C-SSRS behavior (weak: may be past)"),
                    "attempt": ("emergency", 0.5, "C-SSRS attempt (weak: may be past)")},
    "sdcnl": {"suicidal": ("emergency", 0.5, "r/SuicideWatch post (weak: subreddit label)"),
              "depressed": ("benign", 0.7, "r/depression post (weak: subreddit label)")},
    "dreaddit": {"stress": ("benign", 1.0, "stress without intent"), "not_stress": ("benign", 1.0, "no stress")},
    "cadec": "benign:0.7:drug review (weak; stop/quit posts relabelled by hand)",
    "ichi2016": "benign:1.0:health-forum question",
    "constraint2021": {"fake": ("unsupported_claim", 0.5, "CONSTRAINT fake (weak: includes satire/politics)"),
                       "real": ("benign", 1.0, "CONSTRAINT real: news and agency posts")},
    "covid_rumor": {"false": ("unsupported_claim", 0.5, "COVID rumor rated false (weak)"),
                    "true": ("benign", 0.7, "COVID rumor rated true")},
    "tubespam": {"spam": ("promotion", 1.0, "YouTube comment spam"), "ham": ("benign", 1.0, "YouTube comment")},
    "sms_spam": {"spam": ("promotion", 1.0, "SMS spam"), "ham": ("benign", 1.0, "SMS chat")},
    "selfmed_claims": {"no_claim": ("benign", 0.7, "self-medication post with no claim")},
}


def main() -> int:
    """Write one map file per source."""
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_dir()
    if data_dir is None:
        print("usage: build_map.py DATA_DIR", file=sys.stderr)
        return 2
    for source, mapping in MAP.items():
        rows = []
        for r in read_jsonl(data_dir / "external" / f"{source}.jsonl"):
            if isinstance(mapping, str):
                label, weight, note = mapping.split(":", 2)
                got: tuple[str, float, str] | None = (label, float(weight), note)
            else:
                got = mapping.get(r["source_label"])
            if got is None or r.get("label_conflict"):
                continue
            rows.append({"source": source, "source_id": r["source_id"], "label": got[0], "weight": got[1]})
        out = HERE / f"map-{source}.jsonl"
        out.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
        print(f"{out.name}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
