"""RunStats: the run's counters, and their flat form in the manifest that a resume reads back."""

from selfinstruct_local.pipeline.stats import RunStats


def test_counters_survive_the_manifest_round_trip():
    stats = RunStats(source_requests=12, candidates=40, passages_drawn=3)
    stats.stage("bootstrap").requests = 12
    stats.stage("bootstrap").tokens = 3001
    stats.stage("judge").requests = 5
    stats.classified(True)
    stats.classified(None)
    flat = stats.to_json()
    assert flat == {"bootstrap_requests": 12, "bootstrap_tokens": 3001, "candidates": 40,
                    "classification_unclear": 1, "classification_yes": 1, "judge_requests": 5,
                    "passages_drawn": 3, "source_requests": 12}
    assert list(flat) == sorted(flat)  # zero counters (judge_tokens, ...) are left out
    assert RunStats.from_json(flat) == stats


def test_a_manifest_of_another_version_resumes_with_its_keys_kept_and_derived_ones_skipped():
    old = {"source_requests": 8, "classify_tokens": 77, "rounds": 2, "accepted": 5,
           "some_future_counter": 4, "notes": "kept as written"}
    stats = RunStats.from_json(old, skip=("rounds", "accepted"))
    assert stats.source_requests == 8 and stats.stage("classify").tokens == 77
    assert stats.other == {"some_future_counter": 4, "notes": "kept as written"}
    assert stats.to_json() == {"classify_tokens": 77, "notes": "kept as written",
                               "some_future_counter": 4, "source_requests": 8}
