"""The baseline gate: a forecaster must not lose to persistence beyond a stated tolerance.

One step ahead, a slowly moving sensor is hard to beat: "next = last" is close to the
floor set by the sensor's resolution. A learned model that cannot match it is refused,
and the best candidate that does (an AR model, or persistence itself) is published.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    candidate: str
    rmse: float
    persistence_rmse: float
    tolerance: float
    passed: bool

    @property
    def limit(self) -> float:
        return self.persistence_rmse * (1 + self.tolerance)

    def describe(self) -> str:
        verdict = "passes" if self.passed else "REFUSED"
        return (f"baseline gate {verdict}: {self.candidate} test RMSE {self.rmse:.4f} vs "
                f"persistence {self.persistence_rmse:.4f} x (1 + {self.tolerance:g}) = "
                f"{self.limit:.4f}")

    def to_dict(self) -> dict[str, object]:
        return {"candidate": self.candidate, "rmse": self.rmse,
                "persistence_rmse": self.persistence_rmse, "tolerance": self.tolerance,
                "limit": self.limit, "passed": self.passed}


def baseline_gate(candidate: str, rmse: float, persistence_rmse: float,
                  tolerance: float) -> GateDecision:
    if tolerance < 0:
        raise ValueError("the gate tolerance cannot be negative")
    passed = rmse == rmse and rmse <= persistence_rmse * (1 + tolerance)  # NaN never passes
    return GateDecision(candidate, rmse, persistence_rmse, tolerance, passed)
