"""Energy figures for finished requests. Placeholder until the estimator and attribution land."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..records import Capture

if TYPE_CHECKING:
    from ..clusters import Fleet
    from ..settings import Settings

EnergySource = Literal["estimated", "measured"]


@dataclass(frozen=True, slots=True)
class EnergyFigure:
    energy_j: float
    energy_j_min: float
    energy_j_max: float
    source: EnergySource = "estimated"
    method: str = "placeholder"


class EnergyService:
    J_PER_TOKEN = 0.3

    @classmethod
    def from_settings(cls, settings: Settings, fleet: Fleet) -> EnergyService:
        return cls()

    def estimate(self, capture: Capture) -> EnergyFigure:
        """Best figure known now (used for response headers); never raises."""
        energy_j = self.J_PER_TOKEN * (capture.completion_tokens + 0.25 * capture.prompt_tokens)
        return EnergyFigure(energy_j, energy_j * 0.5, energy_j * 2.0)

    def settle(self, capture: Capture, done: Callable[[EnergyFigure], None]) -> None:
        """Call ``done`` with the final figure: now for estimates, later once measured energy is known."""
        done(self.estimate(capture))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Expected energy of a request of this size on ``cluster`` (for routing); never raises."""
        return self.J_PER_TOKEN * (completion_tokens + 0.25 * prompt_tokens)

    def pue(self, cluster: str) -> float:
        """Facility overhead multiplier for ``cluster``."""
        return 1.0
