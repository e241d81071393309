"""A run's counters, in one object: what the loop and the methods count, saved in the manifest's
`counts` and read back from it on resume.

The manifest keeps its flat form ({"source_requests": 40, "bootstrap_tokens": 9120, ...}) so that
runs started by an earlier version resume as before; a key this version does not know is carried
over unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

STAGE_FIELDS = ("requests", "tokens")


@dataclass
class StageStats:
    requests: int = 0  # requests sent to the engine
    tokens: int = 0  # tokens generated in their answers


@dataclass
class RunStats:
    source_requests: int = 0  # sent so far: the next one's number (its prompt sample, its seed)
    source_answers: int = 0
    source_tasks: int = 0  # tasks accepted from those answers
    candidates: int = 0  # instructions parsed from source answers
    surplus_unused: int = 0  # candidates left unscreened: the target was already in reach
    passages_drawn: int = 0  # grounded runs: a resume continues the draw from here
    instances_generated: int = 0  # before the instance filters
    classification_yes: int = 0
    classification_no: int = 0
    classification_unclear: int = 0
    judged: int = 0  # score rows written by --judge
    judge_unparsed: int = 0  # of which the judge's answer held no score
    stages: dict[str, StageStats] = field(default_factory=dict)
    other: dict[str, object] = field(default_factory=dict)  # keys of other versions, kept

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())

    def classified(self, label: bool | None) -> None:
        """Count a classify answer: yes, no, or unclear (None)."""
        if label is None:
            self.classification_unclear += 1
        elif label:
            self.classification_yes += 1
        else:
            self.classification_no += 1

    def to_json(self) -> dict:
        """The flat manifest form, sorted by key; a counter still at 0 is left out."""
        flat: dict[str, object] = dict(self.other)
        flat.update({f.name: getattr(self, f.name) for f in _counters()})
        for name, stage in self.stages.items():
            flat.update({f"{name}_{k}": getattr(stage, k) for k in STAGE_FIELDS})
        return {k: v for k, v in sorted(flat.items()) if v != 0}

    @classmethod
    def from_json(cls, counts: dict, skip: tuple[str, ...] = ()) -> RunStats:
        """Read back what to_json wrote, leaving out the keys in `skip`."""
        stats, known = cls(), {f.name for f in _counters()}
        for key, value in counts.items():
            stage, _, what = key.rpartition("_")
            if key in skip:
                continue
            elif key in known:
                setattr(stats, key, value)
            elif stage and what in STAGE_FIELDS and isinstance(value, int):
                setattr(stats.stage(stage), what, value)
            else:
                stats.other[key] = value
        return stats


def _counters():
    return [f for f in fields(RunStats) if f.type == "int"]
