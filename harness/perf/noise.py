"""Noise control for timed measurements: when a point is measured again, when it is still noisy,
and when its GPU telemetry covered long enough for an energy figure. The sweep applies these
rules before it records a point; the report applies the same ones when it shows it.

A point whose repeats vary by more than NOISE_LIMIT ((max − min) / median), or whose timed loop
gave the GPU telemetry less than MIN_TELEMETRY_S to average over, is timed again with
REMEASURE_FACTOR times the repeats (and at least enough to cover MIN_TELEMETRY_S); the second
measurement is recorded, and marked ``noisy`` if it still varies by more than NOISE_LIMIT.
"""

from __future__ import annotations

import math

NOISE_LIMIT = 0.10
MIN_TELEMETRY_S = 1.0
REMEASURE_FACTOR = 3


def needs_remeasure(timing, with_telemetry: bool) -> bool:
    """Too noisy, or (where GPU telemetry runs) too short for it to average power over."""
    too_short = with_telemetry and timing.median_ms * timing.repeats / 1e3 < MIN_TELEMETRY_S
    return timing.spread > NOISE_LIMIT or too_short


def remeasure_repeats(timing, with_telemetry: bool) -> int:
    cover = math.ceil(MIN_TELEMETRY_S * 1e3 / timing.median_ms) if with_telemetry else 0
    return max(REMEASURE_FACTOR * timing.repeats, cover)


def is_noisy(record: dict) -> bool:
    """A recorded point's repeats varied by more than NOISE_LIMIT (records from before the sweep
    flagged it themselves are judged from their spread)."""
    return bool(record.get("noisy", (record.get("spread") or 0.0) > NOISE_LIMIT))


def energy_covered(record: dict) -> bool:
    """Energy per cell rests on at least MIN_TELEMETRY_S of GPU telemetry."""
    return (record.get("telemetry_seconds") or 0.0) >= MIN_TELEMETRY_S
