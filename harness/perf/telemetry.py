"""GPU telemetry through NVML (nvidia-ml-py), sampled on a thread while a measurement runs:
power, energy, SM clock, utilisation, temperature and device memory in use."""

from __future__ import annotations

import threading
import time


class Telemetry:
    """``with Telemetry() as t: ...`` then ``t.summary()``; empty on a machine without NVML."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.05):
        """``device_index`` is a CUDA index; NVML numbers GPUs its own way (CUDA_VISIBLE_DEVICES
        reorders CUDA's), so the GPU is found by its UUID, and by index only where that fails."""
        self.interval_s = interval_s
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = None
        self._handle = None
        self._energy_start = None
        self._energy_end = None
        self._t0 = self._t1 = 0.0
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = _nvml_handle(pynvml, device_index)
        except Exception:  # no driver, no GPU, or no nvidia-ml-py
            self._nvml = None

    def _energy_mj(self):
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception:  # not supported on every GPU
            return None

    def _sample(self) -> None:
        n, h = self._nvml, self._handle
        while not self._stop.is_set():
            try:
                util = n.nvmlDeviceGetUtilizationRates(h)
                self.samples.append(
                    {
                        "power_w": n.nvmlDeviceGetPowerUsage(h) / 1e3,
                        "sm_clock_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
                        "gpu_util": util.gpu,
                        "temp_c": n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
                        "mem_used_bytes": n.nvmlDeviceGetMemoryInfo(h).used,
                    }
                )
            except Exception:
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "Telemetry":
        self._t0 = time.perf_counter()
        if self._handle is not None:
            self._energy_start = self._energy_mj()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._t1 = time.perf_counter()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._energy_end = self._energy_mj()

    def summary(self) -> dict:
        """Means and peaks over the samples; energy from the GPU's counter when it has one and it
        moved, else mean power × wall time (which side was used is recorded)."""
        if not self.samples:
            return {}
        mean = lambda k: sum(s[k] for s in self.samples) / len(self.samples)  # noqa: E731
        seconds = self._t1 - self._t0
        counted = None
        if self._energy_start is not None and self._energy_end is not None:
            counted = (self._energy_end - self._energy_start) / 1e3
        # the counter ticks coarsely: a window of a few milliseconds can read 0 J
        energy_j = counted if counted else mean("power_w") * seconds
        return {
            "power_w": mean("power_w"),
            "energy_j": energy_j,
            "sm_clock_mhz": mean("sm_clock_mhz"),
            "gpu_util": mean("gpu_util"),
            "temp_c_max": max(s["temp_c"] for s in self.samples),
            "nvml_mem_peak_bytes": max(s["mem_used_bytes"] for s in self.samples),
            "telemetry_seconds": seconds,
            "telemetry_samples": len(self.samples),
            "energy_source": "counter" if counted else "mean power x time",
        }


def _nvml_handle(pynvml, cuda_index: int):
    import torch

    try:
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:  # an older driver or torch without device UUIDs
        return pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
