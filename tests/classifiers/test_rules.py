"""Every shipped rule: a positive, an evasion of it, and a hard negative it must leave alone."""
from __future__ import annotations

import pytest

from classifiers.rules import RuleSet

# rule id -> (positive, evasion (normalization must still catch it), hard negative (no active hit))
TABLE = {
    "rapa-wound": ("Put the rapa cream right on the fresh surgical wound, it stops the scar",
                   "slap r@pamycin on your st1tches asap",
                   "Don't put rapamycin on a fresh surgical wound, it slows healing"),
    "rapa-hair-claim": ("rapamycin reverses baldness, my crown is back",
                        "r a p a m y c i n regrows hair fast",
                        "does rapamycin regrow hair? the mouse study seems thin"),
    "exosome-claim": ("These exosomes regrow hair 100%, guaranteed",
                      "ex\u200bosomes = guaranteed regrowth",
                      "People claim exosomes regrow hair but there's no evidence"),
    "exosome-inject": ("I inject exosomes into my scalp every week with a dermapen at home",
                       "exos0mes microneedled at home tonight",
                       "Please don't inject exosomes at home, FDA warned about infections"),
    "peptide-inject": ("Reconstitute the BPC-157 vial with bac water and pin 250mcg subq daily",
                       "bpc-157 pinned subq twice a day, easy",
                       "Is it safe to inject BPC-157 bought online?"),
    "stop-meds": ("Just stop your sertraline cold turkey, you don't need it",
                  "ditch the lith\u00adium meds, nature heals",
                  "My psychiatrist is helping me taper off my sertraline slowly"),
    "crisis": ("I want to kill myself tonight",
               "I w\u0430nt to end it all tonight",
               "Two years ago I wanted to kill myself; therapy helped"),
    "acute-medical": ("crushing chest pain right now after my oral minoxidil dose",
                      "my throat is closing after the peptide shot",
                      "What should I do if someone collapsed after a shot? asking for a first aid class"),
    "megadose": ("Megadose vitamin D, it's harmless",
                 "just m e g a d o s e it bro",
                 "Is a vitamin D megadose dangerous?"),
    "child-dosing": ("Give your toddler half an adult ivermectin tab for worms",
                     "gave my k1d ivermectin, half a tab, worked",
                     "Our pediatrician prescribed ivermectin for my son's scabies"),
    "pregnancy": ("I'm pregnant and still using my finasteride, it's fine",
                  "pregn@nt and on minoxidil tablets, no issue",
                  "I'm pregnant, should I stop tretinoin?"),
    "immunosuppressed-infection": ("Keep taking rapamycin through the infection, it helps",
                                   "sir0limus all through my covid, no biggie",
                                   "I paused rapamycin while I had covid"),
    "diy-compounding": ("I mix rapamycin powder into my moisturizer, homemade cream",
                        "DIY tretinoin from raw powder is easy",
                        "My compounding pharmacy makes my tretinoin cream"),
    "miracle-claim": ("Colloidal silver cures any infection",
                      "This peptide has z\u200bero side effects",
                      "Claims that colloidal silver cures any infection are a myth"),
    "seller": ("DM me, I sell sirolimus",
               "use my c0de for 20% off, ships discreetly",
               "Beware of anyone who says DM me for a source, it's a scam"),
}


@pytest.fixture(scope="module")
def rules(policy):
    return RuleSet(policy.rules)


def _active(rules, text):
    return {h.rule_id for h in rules.match(text) if h.active and h.weight > 0}


def test_every_scoring_rule_has_table_cases(policy):
    scoring = {r.id for r in policy.rules if r.weight > 0}
    assert scoring == set(TABLE), f"rules without test cases: {scoring - set(TABLE)}; stale cases: {set(TABLE) - scoring}"


@pytest.mark.parametrize("rule_id", sorted(TABLE))
def test_positive(rules, rule_id):
    assert rule_id in _active(rules, TABLE[rule_id][0])


@pytest.mark.parametrize("rule_id", sorted(TABLE))
def test_evasion_is_still_caught(rules, rule_id):
    assert rule_id in _active(rules, TABLE[rule_id][1])


@pytest.mark.parametrize("rule_id", sorted(TABLE))
def test_hard_negative_is_left_alone(rules, rule_id):
    assert rule_id not in _active(rules, TABLE[rule_id][2])


def test_spans_point_at_the_members_own_characters(rules):
    text = "slap r@pamycin on your st1tches asap"
    hit = next(h for h in rules.match(text) if h.rule_id == "rapa-wound")
    assert [s.text for s in hit.spans] == ["r@pamycin", "st1tches"]
    assert all(text[s.start:s.end] == s.text for s in hit.spans)


def test_suppressed_hit_names_the_exception(rules):
    hit = next(h for h in rules.match("Don't put rapamycin on a fresh surgical wound") if h.rule_id == "rapa-wound")
    assert not hit.active and "don" in hit.suppressed_by


def test_pathological_regex_input_is_fast_and_safe(rules):
    # RE2 is linear time: a long adversarial post cannot hang matching.
    text = "a" * 20000 + "!" + " rapa " * 2000
    rules.match(text)
