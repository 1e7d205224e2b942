"""What a search cost: device time, and energy and CO2 estimates that say how they were made.

Energy comes from codecarbon's offline tracker when it is installed; otherwise it is device
power times time, with the power read from the GPU (NVML, through torch) or, on CPU, an assumed
power per core. The report always names the method used.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import torch

CPU_WATTS_PER_CORE = 10.0  # assumption for CPUs: no portable way to read their power
GRID_G_CO2_PER_KWH = 475.0  # world-average carbon intensity of electricity (IEA, 2019)


@dataclass
class SearchCost:
    """Wall time and energy of one search (supernet training plus the outer search)."""

    train_seconds: float = 0.0
    search_seconds: float = 0.0
    devices: int = 1
    device: str = "cpu"
    energy_kwh: float | None = None
    co2_kg: float | None = None
    method: str = ""

    @property
    def device_hours(self) -> float:
        return (self.train_seconds + self.search_seconds) * self.devices / 3600

    def to_json(self) -> dict:
        return {**asdict(self), "device_hours": self.device_hours}


class EnergyMeter:
    """Measures energy between ``start()`` and ``stop()``.

    >>> meter = EnergyMeter(torch.device("cpu"), use_codecarbon=False)
    >>> meter.start(); kwh, method = meter.stop(); kwh >= 0 and "assumed" in method
    True
    """

    def __init__(self, device: torch.device, devices: int = 1, use_codecarbon: bool = True):
        self.device, self.devices = device, devices
        self._tracker = _codecarbon_tracker() if use_codecarbon else None
        self._samples: list[float] = []
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        if self._tracker is not None:
            self._tracker.start()

    def sample(self) -> None:
        """Read the GPU's power now (call it now and then during long work)."""
        watts = _gpu_watts(self.device)
        if watts is not None:
            self._samples.append(watts)

    def stop(self) -> tuple[float, str]:
        """Energy in kWh since ``start()``, and how it was obtained."""
        seconds = time.perf_counter() - self._started
        if self._tracker is not None:
            self._tracker.stop()
            return float(self._tracker.final_emissions_data.energy_consumed), "codecarbon (offline)"
        self.sample()
        if self._samples:
            watts = sum(self._samples) / len(self._samples) * self.devices
            method = f"mean GPU power read through NVML ({watts:.0f} W) x time"
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            watts = CPU_WATTS_PER_CORE * cores
            method = (f"assumed {CPU_WATTS_PER_CORE:.0f} W per CPU core x {cores} cores x time "
                      "(no power reading on CPU)")
        return watts * seconds / 3.6e6, method


def co2_kg(energy_kwh: float) -> float:
    """CO2 of ``energy_kwh`` at the world-average grid intensity."""
    return energy_kwh * GRID_G_CO2_PER_KWH / 1000


def _gpu_watts(device: torch.device) -> float | None:
    if device.type != "cuda" or not hasattr(torch.cuda, "power_draw"):
        return None
    try:
        return torch.cuda.power_draw(device) / 1000  # milliwatts
    except Exception:  # NVML missing or not permitted: fall back to the CPU assumption
        return None


def _codecarbon_tracker():
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        return None
    return OfflineEmissionsTracker(country_iso_code="USA", save_to_file=False, log_level="error")
