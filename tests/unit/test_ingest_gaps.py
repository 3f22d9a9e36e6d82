"""Gap detection: when to ask for a RESEND, how often, and when to give up."""

from __future__ import annotations

from services.ingest.gaps import GapTracker


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def tracker(clock: Clock, **over: int | float) -> GapTracker:
    args: dict[str, float] = {"grace_s": 2.0, "retry_s": 10.0, "max_attempts": 2,
                              "max_span": 1000}
    args.update(over)
    return GapTracker(grace_s=args["grace_s"], retry_s=args["retry_s"],
                      max_attempts=int(args["max_attempts"]), max_span=int(args["max_span"]),
                      clock=clock)


def test_a_gap_is_asked_for_after_the_grace_then_retried_then_given_up() -> None:
    clock = Clock()
    g = tracker(clock)
    g.observe("lab", "d", range(0, 10))
    g.observe("lab", "d", range(15, 20))
    first = g.check()
    assert first.requests == [] and first.missing == 5  # out-of-order delivery may fill it
    clock.t += 2.5
    (req,) = g.check().requests
    assert (req.site, req.device, req.from_seq, req.to_seq, req.attempt) == ("lab", "d", 10, 14, 1)
    clock.t += 5
    assert g.check().requests == []  # not before retry_s
    clock.t += 6
    (again,) = g.check().requests
    assert again.attempt == 2
    clock.t += 11
    gave_up = g.check()
    assert gave_up.requests == [] and gave_up.lost == 5 and gave_up.missing == 0
    assert g.check().lost == 0


def test_a_partly_filled_gap_keeps_its_history_and_closes() -> None:
    clock = Clock()
    g = tracker(clock)
    g.observe("lab", "d", [0, 10])
    g.check()
    clock.t += 3
    (req,) = g.check().requests
    assert (req.from_seq, req.to_seq) == (1, 9)
    g.observe("lab", "d", range(1, 5))
    check = g.check()
    assert check.requests == [] and check.missing == 5  # asked 0 s ago: wait retry_s
    g.observe("lab", "d", range(5, 10))
    assert g.check().missing == 0


def test_large_gaps_are_asked_for_in_spans() -> None:
    clock = Clock()
    g = tracker(clock, max_span=400, grace_s=0)
    g.observe("s", "d", [0, 1001])
    spans = [(r.from_seq, r.to_seq) for r in g.check().requests]
    assert spans == [(1, 400), (401, 800), (801, 1000)]


def test_seeded_holes_wait_until_the_site_is_known() -> None:
    clock = Clock()
    g = tracker(clock, grace_s=0)
    g.seed({"d": [(0, 4), (8, 9)]})
    assert g.check().requests == []  # no site yet: nowhere to send the command
    g.observe("north", "d", [10])
    (req,) = g.check().requests
    assert (req.site, req.from_seq, req.to_seq) == ("north", 5, 7)
