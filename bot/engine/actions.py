"""Actions and their union: the harshest outcome wins, and a note plus a queue item is note_and_queue."""
from __future__ import annotations

SEVERITY = {"none": 0, "note": 1, "queue": 2, "note_and_queue": 3, "escalate": 4}


def union(a: str, b: str) -> str:
    """Combine two actions: escalate beats everything; note with queue becomes note_and_queue."""
    if "escalate" in (a, b):
        return "escalate"
    parts = {a, b}
    if "note_and_queue" in parts or parts == {"note", "queue"}:
        return "note_and_queue"
    return a if SEVERITY[a] >= SEVERITY[b] else b


def union_all(actions) -> str:
    """Union of any number of actions; `none` when empty."""
    result = "none"
    for action in actions:
        result = union(result, action)
    return result


def at_least(action: str, floor: str) -> str:
    """`action`, raised to `floor` when it is milder."""
    return union(action, floor) if SEVERITY[action] < SEVERITY[floor] else action


def has_note(action: str) -> bool:
    """Does this action post a public caution note?"""
    return action in ("note", "note_and_queue")


def has_queue(action: str) -> bool:
    """Does this action put the post in the moderators' queue?"""
    return action in ("queue", "note_and_queue", "escalate")
