"""Caveat policies: YAML rules, thresholds, actions, community defaults and the evidence library."""
