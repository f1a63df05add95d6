"""Two `evaluate_family` results compared episode by episode (`metaloco compare`).

Episode i of the training-family evaluation is the same task and commands for every model folder and method, so
two results pair up: the return difference is judged by its paired standard error, and the falls by the episodes
where only one of the two fell (McNemar's exact test: with no difference, each such episode is a coin toss) and by
the fall-rate difference with its paired standard error (what a bound on how much more one may fall needs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from metaloco.adaptation.metrics import standard_error
from metaloco.schema import ConfigError


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for `only_a` and `only_b` discordant pairs (1.0 without any)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_comparison(a: dict, b: dict) -> dict:
    """`a` minus `b`, two `evaluate_family` results over the same episodes.

    Returns:
        {"episodes", "first_episode", "return_a", "return_b", "return_diff", "return_diff_sem", "falls_a",
        "falls_b", "fell_only_a", "fell_only_b", "falls_p", "fall_rate_diff", "fall_rate_diff_sem"} (the last five
        None for a result without "fell").

    Raises:
        ConfigError: if the two results are not over the same episodes and difficulty.
    """
    for key in ("difficulty", "episodes"):
        if a.get(key) != b.get(key):
            raise ConfigError("compare", key, f"the two results differ ({a.get(key)} and {b.get(key)}): they must "
                                              "be over the same episodes to pair up")
    if a.get("first_episode", 0) != b.get("first_episode", 0):
        raise ConfigError("compare", "first_episode", f"the two results start at different episodes "
                                                      f"({a.get('first_episode', 0)} and {b.get('first_episode', 0)})")
    d = np.asarray(a["returns"], float) - np.asarray(b["returns"], float)
    result = {"episodes": len(d), "first_episode": a.get("first_episode", 0),
              "return_a": float(np.mean(a["returns"])), "return_b": float(np.mean(b["returns"])),
              "return_diff": float(d.mean()),
              "return_diff_sem": standard_error(d),
              "falls_a": a["falls"], "falls_b": b["falls"], "fell_only_a": None, "fell_only_b": None, "falls_p": None,
              "fall_rate_diff": None, "fall_rate_diff_sem": None}
    if "fell" in a and "fell" in b:
        fell = np.asarray(a["fell"], float) - np.asarray(b["fell"], float)  # +1: only a fell, -1: only b
        only_a, only_b = int(np.sum(fell > 0)), int(np.sum(fell < 0))
        result.update(fell_only_a=only_a, fell_only_b=only_b, falls_p=mcnemar_p(only_a, only_b),
                      fall_rate_diff=float(fell.mean()), fall_rate_diff_sem=standard_error(fell))
    return result


def load_result(path: str | Path) -> dict:
    """The JSON object of `metaloco eval --family ... --json` from a file (its last line that is one, so a file
    that also caught the progress lines on stderr reads too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "file", "not found: expected the output of `metaloco eval --family ... --json`")
    for line in reversed(path.read_text().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "returns" in result:
                return result
    raise ConfigError(str(path), "returns", "no JSON line with per-episode returns: expected the output of "
                                            "`metaloco eval --family ... --json`")


def format_comparison(c: dict, name_a: str, name_b: str) -> str:
    """The comparison as lines a person reads."""
    last = c["first_episode"] + c["episodes"] - 1
    lines = [f"episodes {c['first_episode']}-{last} ({c['episodes']}), {name_a} (a) against {name_b} (b)",
             f"return: a {c['return_a']:.2f}, b {c['return_b']:.2f}; a - b {c['return_diff']:+.2f} "
             f"+- {c['return_diff_sem']:.2f} (paired standard error)",
             f"falls: a {c['falls_a']}, b {c['falls_b']}"]
    if c["falls_p"] is None:
        lines[-1] += " (no per-episode falls in a result: rerun `metaloco eval --family` to pair them)"
    else:
        lines[-1] += (f"; episodes where only a fell: {c['fell_only_a']}, only b: {c['fell_only_b']} "
                      f"(exact McNemar, two-sided p = {c['falls_p']:.3f}); fall rate a - b "
                      f"{c['fall_rate_diff']:+.4f} +- {c['fall_rate_diff_sem']:.4f} (paired standard error)")
    return "\n".join(lines)
